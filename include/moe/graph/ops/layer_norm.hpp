#pragma once
// torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True): the input's last dims
// must be normalized_shape.
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct LayerNorm {
    static constexpr const char* type = "torch.nn.LayerNorm";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"normalized_shape", "eps", "elementwise_affine"});
        c.expect_inputs(1, 1);
        const std::vector<Index> norm = c.int_list_param("normalized_shape");
        const Shape& x = c.input(0);
        bool ok = !norm.empty() && Index(norm.size()) < x.rank() + 1;
        double n = 1;
        for (std::size_t i = 0; ok && i < norm.size(); ++i) {
            ok = norm[i] > 0 && x[x.rank() - Index(norm.size()) + Index(i)] == norm[i];
            n *= double(norm[i]);
        }
        if (!ok) throw c.error("normalized_shape " + to_string(Shape{norm}) + " is not the end of its input's shape " + to_string(x));
        if (!(c.number_param("eps", 1e-5) > 0)) throw c.error("eps must be positive");
        return {x, c.bool_param("elementwise_affine", true) ? 2.0 * n : 0.0, 5.0 * x.per_sample()};
    }
};

}  // namespace moe::graph::ops
