#pragma once
// torch.nn.functional.softmax(input, dim): the input's shape. dim is required (PyTorch's implicit
// choice is deprecated).
#include <cmath>

#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Softmax {
    static constexpr const char* type = "torch.nn.functional.softmax";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1);
        const Index d = c.dim_index(c.int_param("dim"), c.input(0).rank());
        if (c.input(0)[d] == kBatch)
            throw c.error("softmax over dim " + std::to_string(d) + ", the batch dimension of " +
                          to_string(c.input(0)) +
                          ": it would mix the samples of a batch (a gate's softmax is over its experts, dim 1 or -1)");
        return {c.input(0), 0.0, 4.0 * c.input(0).per_sample()};
    }

    /// The tensor as [outer, r, inner] around dim; each of the outer x inner rows of r elements
    /// (stride inner) gets a max-shifted softmax. Backward: dx = y (dy - sum(dy y)).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(Index dim) : dim_(dim) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const AroundDim a(d, dim_);
            const Index outer = a.outer, r = a.size, inner = a.inner;
            const T* x = in[0].data;
            // Chunks of rows fixed by the shape alone (not the thread count): the vectorised exp may
            // round its scalar tail differently, and a result must not depend on the threads.
            parallel_for(outer, 64, 8.0 * double(outer * r * inner), [&](Index o0, Index o1) {
                for (Index o = o0; o < o1; ++o)  // shift by the maximum of each softmax
                    for (Index j = 0; j < inner; ++j) {
                        const Index base = o * r * inner + j;
                        T m = x[base];
                        for (Index i = 1; i < r; ++i) m = std::max(m, x[base + i * inner]);
                        for (Index i = 0; i < r; ++i) out[base + i * inner] = x[base + i * inner] - m;
                    }
                using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
                Eigen::Map<Array> e(out + o0 * r * inner, (o1 - o0) * r * inner);
                e = e.exp();
                for (Index o = o0; o < o1; ++o)
                    for (Index j = 0; j < inner; ++j) {
                        const Index base = o * r * inner + j;
                        T sum = 0;
                        for (Index i = 0; i < r; ++i) sum += out[base + i * inner];
                        const T scale = T(1) / sum;
                        for (Index i = 0; i < r; ++i) out[base + i * inner] *= scale;
                    }
            });
        }
        void backward(const std::vector<In<T>>&, const T* y, const T* dy, const Dims& d,
                      const std::vector<T*>& din) override {
            if (!din[0]) return;
            const AroundDim a(d, dim_);
            const Index outer = a.outer, r = a.size, inner = a.inner;
            moe::detail::for_each_range(outer, 4.0 * double(outer * r * inner), [&](Index o0, Index o1) {
                for (Index o = o0; o < o1; ++o)
                    for (Index j = 0; j < inner; ++j) {
                        const Index base = o * r * inner + j;
                        T dot = 0;
                        for (Index i = 0; i < r; ++i) dot += dy[base + i * inner] * y[base + i * inner];
                        T* dx = din[0] + base;
                        if (this->fresh[0])
                            for (Index i = 0; i < r; ++i)
                                dx[i * inner] = y[base + i * inner] * (dy[base + i * inner] - dot);
                        else
                            for (Index i = 0; i < r; ++i)
                                dx[i * inner] += y[base + i * inner] * (dy[base + i * inner] - dot);
                    }
            });
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        Index dim_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.dim_index(c.int_param("dim"), c.input(0).rank()));
    }
};

}  // namespace moe::graph::ops
