#pragma once
// torch.select(input, dim, index): the slice at `index` of dimension `dim`, which goes away
// ([B, 3, 64] with dim 1, index 2 -> [B, 64]: a task's mixture of moe.MMoE). Not the batch dimension.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Select {
    static constexpr const char* type = "torch.select";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim", "index"});
        c.expect_inputs(1, 1);
        const Shape& x = c.input(0);
        const Index d = c.dim_index(c.int_param("dim"), x.rank());
        if (x[d] == kBatch)
            throw c.error(moe::detail::concat("selects from dim ", d, ", the batch dimension of ", to_string(x)));
        const Index i = c.int_param("index");
        if (i < -x[d] || i >= x[d])
            throw c.error(moe::detail::concat("index ", i, " is out of range for dim ", d, " of size ", x[d], " in ",
                                              to_string(x)));
        OpShape r{x, 0.0, 0.0};
        r.out.dims.erase(r.out.dims.begin() + d);
        return r;
    }

    /// The input as [outer, r, inner] around dim: slice `index` of each outer block.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(Index dim, Index index) : dim_(dim), index_(index) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            const AroundDim a(*in[0].dims, dim_);
            const Index outer = a.outer, r = a.size, inner = a.inner;
            for (Index o = 0; o < outer; ++o) {
                const T* src = in[0].data + (o * r + at(r)) * inner;
                std::copy(src, src + inner, out + o * inner);
            }
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            if (!din[0]) return;
            const AroundDim a(*in[0].dims, dim_);
            const Index outer = a.outer, r = a.size, inner = a.inner;
            for (Index o = 0; o < outer; ++o) {
                T* dst = din[0] + (o * r + at(r)) * inner;
                for (Index j = 0; j < inner; ++j) dst[j] += dout[o * inner + j];
            }
        }

    private:
        Index at(Index r) const { return index_ < 0 ? index_ + r : index_; }
        Index dim_, index_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.dim_index(c.int_param("dim"), c.input(0).rank()), c.int_param("index"));
    }
};

}  // namespace moe::graph::ops
