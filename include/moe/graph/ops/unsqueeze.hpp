#pragma once
// torch.unsqueeze(input, dim): a dimension of size 1 inserted at dim.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Unsqueeze {
    static constexpr const char* type = "torch.unsqueeze";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1);
        const Index d = c.dim_index(c.int_param("dim"), c.input(0).rank() + 1);
        OpShape r{c.input(0), 0.0, 0.0};
        r.out.dims.insert(r.out.dims.begin() + d, 1);
        return r;
    }
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext&, const Shape&) {
        return std::make_unique<SameElements<T>>();
    }
};

}  // namespace moe::graph::ops
