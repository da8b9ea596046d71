#pragma once
// torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True): [B, C] or [B, C, L].
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct BatchNorm1d {
    static constexpr const char* type = "torch.nn.BatchNorm1d";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"num_features", "eps", "momentum", "affine"});
        c.expect_inputs(1, 1);
        const Index f = c.int_param("num_features");
        if (f <= 0) throw c.error(moe::detail::concat("num_features must be positive, got ", f));
        const double eps = c.number_param("eps", 1e-5), momentum = c.number_param("momentum", 0.1);
        if (!(eps > 0)) throw c.error(moe::detail::concat("eps must be positive, got ", eps));
        if (!(momentum >= 0 && momentum <= 1)) throw c.error(moe::detail::concat("momentum must be in [0, 1], got ", momentum));
        const Shape& x = c.input(0);
        if ((x.rank() != 2 && x.rank() != 3) || x[0] != kBatch || x[1] != f)
            throw c.error(moe::detail::concat("expects [B, ", f, "] or [B, ", f, ", L], got ", to_string(x)));
        return {x, c.bool_param("affine", true) ? 2.0 * double(f) : 0.0, 2.0 * x.per_sample()};
    }
};

}  // namespace moe::graph::ops
