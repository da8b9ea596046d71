#pragma once
// torch.sum and torch.mean(input, dim, keepdim=False): the dimensions of dim (one or a list)
// reduced, kept as 1 with keepdim.
#include <set>

#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

template <class Name>
struct Reduce {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim", "keepdim"});
        c.expect_inputs(1, 1);
        const Shape& x = c.input(0);
        std::set<Index> dims;
        for (Index d : c.int_list_param("dim"))
            if (!dims.insert(c.dim_index(d, x.rank())).second) throw c.error(moe::detail::concat("dim ", d, " is listed twice"));
        const bool keep = c.bool_param("keepdim", false);
        OpShape r;
        for (Index i = 0; i < x.rank(); ++i)
            if (!dims.count(i)) r.out.dims.push_back(x[i]);
            else if (keep) r.out.dims.push_back(1);
        r.flops_per_sample = x.per_sample();
        return r;
    }
};

struct SumName { static constexpr const char* value = "torch.sum"; };
struct MeanName { static constexpr const char* value = "torch.mean"; };
using Sum = Reduce<SumName>;
using Mean = Reduce<MeanName>;

}  // namespace moe::graph::ops
