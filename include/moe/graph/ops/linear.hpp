#pragma once
// torch.nn.Linear(in_features, out_features, bias=True): [..., in] -> [..., out].
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Linear {
    static constexpr const char* type = "torch.nn.Linear";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"in_features", "out_features", "bias"});
        c.expect_inputs(1, 1);
        const Index in = c.int_param("in_features"), out = c.int_param("out_features");
        if (in <= 0 || out <= 0) throw c.error(moe::detail::concat("in_features and out_features must be positive, got ", in, " and ", out));
        const bool bias = c.bool_param("bias", true);
        const Shape& x = c.input(0);
        if (x.rank() < 1 || x[x.rank() - 1] != in)
            throw c.error(moe::detail::concat("its input ", to_string(x), " must end in in_features = ", in));
        OpShape r;
        r.out = x;
        r.out.dims.back() = out;
        r.params = double(in) * double(out) + (bias ? double(out) : 0.0);
        r.flops_per_sample = 2.0 * double(in) * double(out) * (x.per_sample() / double(in));
        return r;
    }
};

}  // namespace moe::graph::ops
