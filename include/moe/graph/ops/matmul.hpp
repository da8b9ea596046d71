#pragma once
// torch.matmul(input, other) with PyTorch's rules: 1-D operands are vectors (a dimension added and
// removed again), 2-D matrices, more dimensions batches of matrices whose batch dimensions
// broadcast. The contracted dimensions must be equal; B equals only B.
//
// The check catches the classic mixture-of-experts bug: gates [B, E] times experts stacked on the
// default dim 0, [E, B, D], is a batched product that contracts E against B. It fails for every
// batch size but E and at batch E silently mixes samples; the message says what is meant instead.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Matmul {
    static constexpr const char* type = "torch.matmul";
    static OpShape shape(const OpContext& c) {
        c.allow_params({});
        c.expect_inputs(2, 2);
        const Shape a0 = c.input(0), b0 = c.input(1);
        if (a0.rank() == 0 || b0.rank() == 0)
            throw c.error("multiplies tensors of at least one dimension, got " + to_string(a0) + " and " +
                          to_string(b0));
        // Vectors become matrices: [k] -> [1, k] on the left, [k] -> [k, 1] on the right.
        Shape a = a0, b = b0;
        if (a.rank() == 1) a.dims.insert(a.dims.begin(), 1);
        if (b.rank() == 1) b.dims.push_back(1);
        const Index ka = a[a.rank() - 1], kb = b[b.rank() - 2];
        if (ka != kb) throw c.error(contraction_message(a0, b0, ka, kb));
        // Batch dimensions broadcast.
        Shape batch_a{std::vector<Index>(a.dims.begin(), a.dims.end() - 2)},
            batch_b{std::vector<Index>(b.dims.begin(), b.dims.end() - 2)};
        bool ok = true;
        Shape out = broadcast(batch_a, batch_b, ok);
        if (!ok)
            throw c.error("the batch dimensions " + to_string(batch_a) + " of " + to_string(a0) + " and " +
                          to_string(batch_b) + " of " + to_string(b0) + " do not broadcast");
        if (a0.rank() > 1) out.dims.push_back(a[a.rank() - 2]);
        if (b0.rank() > 1) out.dims.push_back(b[b.rank() - 1]);
        Shape products = out;  // every output element is one dot product of length k
        const double per_sample = products.per_sample() * (ka == kBatch ? 1.0 : double(ka));
        return {out, 0.0, 2.0 * per_sample};
    }

    /// PyTorch's rules at run time: vectors become matrices, the batch dimensions broadcast, and
    /// each output matrix is one row-major product (graph/tensor.hpp: BatchedProduct).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            thread_local std::vector<Index> ao, bo;
            product(*in[0].dims, *in[1].dims).forward(in[0].data, in[1].data, out, ao, bo);
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            product(*in[0].dims, *in[1].dims)
                .backward(in[0].data, in[1].data, dout, din[0], din[1], ao_, bo_, this->fresh[0], this->fresh[1]);
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        static BatchedProduct product(Dims a, Dims b) {
            if (a.size() == 1) a.push_front(1);
            if (b.size() == 1) b.push_back(1);
            BatchedProduct p;
            p.n = a[a.size() - 2];
            p.k = a.back();
            p.m = b.back();
            const Dims ba(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
            const std::size_t r = std::max(ba.size(), bb.size());  // batch dimensions aligned on the right
            p.batch.assign(r, 1);
            for (std::size_t i = 0; i < r; ++i) {
                const Index da = i + ba.size() >= r ? ba[i + ba.size() - r] : 1,
                            db = i + bb.size() >= r ? bb[i + bb.size() - r] : 1;
                p.batch[i] = std::max(da, db);
            }
            p.a_stride = broadcast_strides(ba, p.batch);
            p.b_stride = broadcast_strides(bb, p.batch);
            return p;
        }
        std::vector<Index> ao_, bo_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext&, const Shape&) {
        return std::make_unique<Run<T>>();
    }

private:
    static std::string contraction_message(const Shape& a, const Shape& b, Index ka, Index kb) {
        std::string m =
            moe::detail::concat("contracts the last dimension of its first input ", to_string(a), " (", dim_string(ka),
                                ") with ", b.rank() == 1 ? "the only" : "the second-to-last",
                                " dimension of its second ", to_string(b), " (", dim_string(kb), ")");
        if (ka == kBatch || kb == kBatch) {
            m += moe::detail::concat(": they differ for every batch size but ", dim_string(ka == kBatch ? kb : ka),
                                     ", and at that batch size the product runs but mixes the samples of the batch");
            if (a.rank() == 2 && b.rank() == 3 && b[1] == kBatch && a[0] == kBatch && a[1] == b[0])
                m += moe::detail::concat(
                    ". This looks like gates [B, ", a[1], "] times expert outputs stacked on dim 0 ([", b[0], ", B, ",
                    b[2], "]): stack the experts on dim 1 (torch.stack(..., dim=1) gives [B, ", b[0], ", ", b[2],
                    "]) and multiply each sample's gate row with its experts: torch.bmm(gates.unsqueeze(1), "
                    "experts) gives [B, 1, ",
                    b[2],
                    "] (then squeeze dim 1), or torch.einsum('be,bed->bd', gates, "
                    "experts) gives [B, ",
                    b[2], "]");
        } else {
            m += moe::detail::concat(": ", ka, " != ", kb);
        }
        return m;
    }
};

}  // namespace moe::graph::ops
