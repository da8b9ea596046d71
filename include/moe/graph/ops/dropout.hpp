#pragma once
// torch.nn.Dropout(p=0.5): the input's shape.
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Dropout {
    static constexpr const char* type = "torch.nn.Dropout";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"p"});
        c.expect_inputs(1, 1);
        const double p = c.number_param("p", 0.5);
        if (!(p >= 0.0 && p < 1.0)) throw c.error(moe::detail::concat("p must be in [0, 1), got ", p));
        return {c.input(0), 0.0, c.input(0).per_sample()};
    }
};

}  // namespace moe::graph::ops
