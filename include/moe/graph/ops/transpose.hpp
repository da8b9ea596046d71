#pragma once
// torch.transpose(input, dim0, dim1): the two dimensions swapped.
#include <numeric>

#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Transpose {
    static constexpr const char* type = "torch.transpose";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim0", "dim1"});
        c.expect_inputs(1, 1);
        const Index r = c.input(0).rank();
        const Index a = c.dim_index(c.int_param("dim0"), r, "dim0"), b = c.dim_index(c.int_param("dim1"), r, "dim1");
        OpShape out{c.input(0), 0.0, 0.0};
        std::swap(out.out.dims[std::size_t(a)], out.out.dims[std::size_t(b)]);
        return out;
    }

    /// A permutation of the elements (its own inverse): forward and backward are the same walk.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(std::size_t rank, Index a, Index b) : perm_(rank, 0) {
            std::iota(perm_.begin(), perm_.end(), Index(0));
            std::swap(perm_[std::size_t(a)], perm_[std::size_t(b)]);
        }
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            permute(in[0].data, *in[0].dims, perm_, out, false);
        }
        void backward(const std::vector<In<T>>&, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            if (din[0]) permute(dout, d, perm_, din[0], true);
        }

    private:
        Dims perm_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        const Index r = c.input(0).rank();
        return std::make_unique<Run<T>>(std::size_t(r), c.dim_index(c.int_param("dim0"), r, "dim0"),
                                        c.dim_index(c.int_param("dim1"), r, "dim1"));
    }
};

}  // namespace moe::graph::ops
