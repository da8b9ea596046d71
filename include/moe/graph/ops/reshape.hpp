#pragma once
// torch.reshape(input, shape): the same elements in a new shape; one entry may be -1 (inferred).
// The batch dimension must stay a dimension of its own: the -1 (or null) becomes B only when the
// other entries hold exactly the non-batch elements.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Reshape {
    static constexpr const char* type = "torch.reshape";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"shape"});
        c.expect_inputs(1, 1);
        const Shape& x = c.input(0);
        const std::vector<Index> want = c.int_list_param("shape");
        double fixed = 1;
        int free = 0;
        for (Index d : want) {
            if (d == -1)
                ++free;
            else if (d <= 0)
                throw c.error(moe::detail::concat("shape entries must be positive or -1, got ", d));
            else
                fixed *= double(d);
        }
        const bool has_batch = std::count(x.dims.begin(), x.dims.end(), kBatch) > 0;
        if (free > 1) throw c.error("shape has more than one -1");
        if (has_batch && (free != 1 || fixed != x.per_sample()))
            throw c.error(moe::detail::concat(
                "reshapes ", to_string(x), " to ", to_string(Shape{want}),
                ": keep the batch as a dimension of its own, with -1 where it goes and the other entries "
                "holding the ",
                x.per_sample(), " elements of a sample"));
        OpShape r;
        r.out.dims = want;
        for (Index& d : r.out.dims)
            if (d == -1) d = has_batch ? kBatch : Index(x.per_sample() / fixed);
        if (!has_batch && r.out.per_sample() != x.per_sample())
            throw c.error("reshapes " + to_string(x) + " to " + to_string(r.out) + ": the element counts differ");
        return r;
    }
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext&, const Shape&) {
        return std::make_unique<SameElements<T>>();
    }
};

}  // namespace moe::graph::ops
