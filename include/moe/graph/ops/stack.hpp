#pragma once
// torch.stack(tensors, dim=0): n equal shapes -> a new dimension of size n at dim.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Stack {
    static constexpr const char* type = "torch.stack";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1 << 20);
        const Shape& first = c.input(0);
        for (std::size_t i = 1; i < c.inputs().size(); ++i)
            if (c.input(i) != first)
                throw c.error(moe::detail::concat("stacks equal shapes, but input ", i, " is ", to_string(c.input(i)),
                                                  " and input 0 ", to_string(first)));
        const Index d = c.dim_index(c.int_param("dim", 0), first.rank() + 1);
        OpShape r;
        r.out = first;
        r.out.dims.insert(r.out.dims.begin() + d, Index(c.inputs().size()));
        r.flops_per_sample = 0;
        return r;
    }

    /// The output as [outer, n, inner] around the new dim: input i fills slice i of every outer block.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(Index dim) : dim_(dim) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const AroundDim a(d, dim_);  // the output: n = a.size
            const Index outer = a.outer, inner = a.inner;
            const Index n = Index(in.size());
            moe::detail::for_each_range(
                outer, moe::detail::kElementwiseFlops * double(outer * n * inner), [&](Index o0, Index o1) {
                    for (Index o = o0; o < o1; ++o)
                        for (Index i = 0; i < n; ++i)
                            std::copy(in[std::size_t(i)].data + o * inner, in[std::size_t(i)].data + (o + 1) * inner,
                                      out + (o * n + i) * inner);
                });
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            const AroundDim a(d, dim_);  // the output: n = a.size
            const Index outer = a.outer, inner = a.inner;
            const Index n = Index(in.size());
            moe::detail::for_each_range(outer, moe::detail::kElementwiseFlops * double(outer * n * inner),
                                        [&](Index o0, Index o1) {
                                            for (Index i = 0; i < n; ++i) {
                                                T* dx = din[std::size_t(i)];
                                                if (!dx) continue;
                                                for (Index o = o0; o < o1; ++o) {
                                                    const T* src = dout + (o * n + i) * inner;
                                                    if (this->fresh[std::size_t(i)])
                                                        std::copy(src, src + inner, dx + o * inner);
                                                    else
                                                        for (Index j = 0; j < inner; ++j) dx[o * inner + j] += src[j];
                                                }
                                            }
                                        });
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        Index dim_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.dim_index(c.int_param("dim", 0), c.input(0).rank() + 1));
    }
};

}  // namespace moe::graph::ops
