#pragma once
// torch.squeeze(input, dim=None): removes dimension dim if it is 1 (every 1 without dim). Never the
// batch dimension: whether B is 1 is not known until the data comes.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Squeeze {
    static constexpr const char* type = "torch.squeeze";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1);
        OpShape r{c.input(0), 0.0, 0.0};
        if (!c.has("dim")) {
            r.out.dims.erase(std::remove(r.out.dims.begin(), r.out.dims.end(), Index(1)), r.out.dims.end());
            return r;
        }
        const Index d = c.dim_index(c.int_param("dim"), c.input(0).rank());
        if (r.out[d] == kBatch)
            throw c.error(moe::detail::concat("squeezes dim ", d, ", the batch dimension of ", to_string(c.input(0)),
                                              ": a batch of one sample would lose it"));
        if (r.out[d] == 1) r.out.dims.erase(r.out.dims.begin() + d);
        return r;
    }
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext&, const Shape&) {
        return std::make_unique<SameElements<T>>();
    }
};

}  // namespace moe::graph::ops
