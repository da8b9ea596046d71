#pragma once
// The elementwise activations, modules and functions alike: torch.nn.ReLU, GELU, Sigmoid, Tanh and
// torch.nn.functional.relu, sigmoid. The output has the input's shape. (One rule for six types:
// each is a one-line struct here.)
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

template <class Name>
struct Elementwise {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params({});
        c.expect_inputs(1, 1);
        return {c.input(0), 0.0, c.input(0).per_sample()};
    }
};

struct ReLUName { static constexpr const char* value = "torch.nn.ReLU"; };
struct GELUName { static constexpr const char* value = "torch.nn.GELU"; };
struct SigmoidName { static constexpr const char* value = "torch.nn.Sigmoid"; };
struct TanhName { static constexpr const char* value = "torch.nn.Tanh"; };
struct FunctionalReLUName { static constexpr const char* value = "torch.nn.functional.relu"; };
struct FunctionalSigmoidName { static constexpr const char* value = "torch.nn.functional.sigmoid"; };

using ReLU = Elementwise<ReLUName>;
using GELU = Elementwise<GELUName>;
using Sigmoid = Elementwise<SigmoidName>;
using Tanh = Elementwise<TanhName>;
using FunctionalReLU = Elementwise<FunctionalReLUName>;
using FunctionalSigmoid = Elementwise<FunctionalSigmoidName>;

}  // namespace moe::graph::ops
