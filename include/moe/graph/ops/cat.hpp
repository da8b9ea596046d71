#pragma once
// torch.cat(tensors, dim=0): equal shapes but along dim, where the sizes add up. Not along the
// batch dimension (the samples of a batch would become more samples).
#include "moe/graph/kernel.hpp"

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
                throw c.error(moe::detail::concat("concatenates along dim ", d, " shapes equal elsewhere, but input ",
                                                  i, " is ", to_string(s), " and input 0 ", to_string(first)));
            if (s[d] == kBatch)
                throw c.error(moe::detail::concat("concatenates along dim ", d, ", the batch dimension of ",
                                                  to_string(s), ": features are concatenated along dim 1 (or -1)"));
            r.out.dims[std::size_t(d)] += s[d];
        }
        return r;
    }

    /// The output as [outer, total] around dim: input i fills its own columns of every outer row.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(Index dim) : dim_(dim) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const AroundDim a(d, dim_);
            const Index outer = a.outer, total = a.size * a.inner;
            Index at = 0;
            for (const auto& x : in) {
                const Index w = outer ? x.size() / outer : 0;
                for (Index o = 0; o < outer; ++o) std::copy(x.data + o * w, x.data + (o + 1) * w, out + o * total + at);
                at += w;
            }
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            const AroundDim a(d, dim_);
            const Index outer = a.outer, total = a.size * a.inner;
            Index at = 0;
            for (std::size_t i = 0; i < in.size(); ++i) {
                const Index w = outer ? in[i].size() / outer : 0;
                if (T* dx = din[i])
                    for (Index o = 0; o < outer; ++o)
                        for (Index j = 0; j < w; ++j) dx[o * w + j] += dout[o * total + at + j];
                at += w;
            }
        }

    private:
        Index dim_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.dim_index(c.int_param("dim", 0), c.input(0).rank()));
    }
};

}  // namespace moe::graph::ops
