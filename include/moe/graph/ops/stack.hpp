#pragma once
// torch.stack(tensors, dim=0): n equal shapes -> a new dimension of size n at dim.
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Stack {
    static constexpr const char* type = "torch.stack";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1 << 20);
        const Shape& first = c.input(0);
        for (std::size_t i = 1; i < c.inputs().size(); ++i)
            if (c.input(i) != first)
                throw c.error(moe::detail::concat("stacks equal shapes, but input ", i, " is ", to_string(c.input(i)), " and input 0 ",
                                                  to_string(first)));
        const Index d = c.dim_index(c.int_param("dim", 0), first.rank() + 1);
        OpShape r;
        r.out = first;
        r.out.dims.insert(r.out.dims.begin() + d, Index(c.inputs().size()));
        r.flops_per_sample = 0;
        return r;
    }
};

}  // namespace moe::graph::ops
