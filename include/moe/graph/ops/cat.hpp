#pragma once
// torch.cat(tensors, dim=0): equal shapes but along dim, where the sizes add up. Not along the
// batch dimension (the samples of a batch would become more samples).
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Cat {
    static constexpr const char* type = "torch.cat";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1 << 20);
        const Shape& first = c.input(0);
        const Index d = c.dim_index(c.int_param("dim", 0), first.rank());
        OpShape r;
        r.out = first;
        r.out.dims[std::size_t(d)] = 0;
        for (std::size_t i = 0; i < c.inputs().size(); ++i) {
            const Shape& s = c.input(i);
            bool ok = s.rank() == first.rank();
            for (Index k = 0; ok && k < s.rank(); ++k) ok = k == d || s[k] == first[k];
            if (!ok)
                throw c.error(moe::detail::concat("concatenates along dim ", d, " shapes equal elsewhere, but input ", i, " is ",
                                                  to_string(s), " and input 0 ", to_string(first)));
            if (s[d] == kBatch)
                throw c.error(moe::detail::concat("concatenates along dim ", d, ", the batch dimension of ", to_string(s),
                                                  ": features are concatenated along dim 1 (or -1)"));
            r.out.dims[std::size_t(d)] += s[d];
        }
        return r;
    }
};

}  // namespace moe::graph::ops
