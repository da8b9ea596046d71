#pragma once
// torch.add and torch.mul(input, other): two tensors broadcast (PyTorch's rules), or one tensor and
// a number in the param `other`.
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

template <class Name>
struct Binary {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params({"other", "alpha"});
        if (c.has("other")) {
            c.expect_inputs(1, 1);
            c.number_param("other", 0.0);
            return {c.input(0), 0.0, c.input(0).per_sample()};
        }
        c.expect_inputs(2, 2);
        bool ok = true;
        const Shape out = broadcast(c.input(0), c.input(1), ok);
        if (!ok) throw c.error("the shapes " + to_string(c.input(0)) + " and " + to_string(c.input(1)) + " do not broadcast");
        return {out, 0.0, out.per_sample()};
    }
};

struct AddName { static constexpr const char* value = "torch.add"; };
struct MulName { static constexpr const char* value = "torch.mul"; };
using Add = Binary<AddName>;
using Mul = Binary<MulName>;

}  // namespace moe::graph::ops
