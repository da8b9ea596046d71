#pragma once
// torch.nn.Linear(in_features, out_features, bias=True): [..., in] -> [..., out].
#include <cmath>

#include "moe/core/view.hpp"
#include "moe/detail/row_sums.hpp"
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Linear {
    static constexpr const char* type = "torch.nn.Linear";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"in_features", "out_features", "bias"});
        c.expect_inputs(1, 1);
        const Index in = c.int_param("in_features"), out = c.int_param("out_features");
        if (in <= 0 || out <= 0)
            throw c.error(moe::detail::concat("in_features and out_features must be positive, got ", in, " and ", out));
        const bool bias = c.bool_param("bias", true);
        const Shape& x = c.input(0);
        if (x.rank() < 1 || x[x.rank() - 1] != in)
            throw c.error(moe::detail::concat("its input ", to_string(x), " must end in in_features = ", in));
        OpShape r;
        r.out = x;
        r.out.dims.back() = out;
        r.params = double(in) * double(out) + (bias ? double(out) : 0.0);
        r.flops_per_sample = 2.0 * double(in) * double(out) * (x.per_sample() / double(in));
        return r;
    }

    /// y = x W^T + b on the last dimension: the rows of x are the columns of an in x rows matrix.
    /// Weight out x in ("weight"), bias out ("bias"). Linears that read the same value run fused
    /// (graph/fused_linear.hpp); this kernel is the one that runs alone.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(Index in, Index out, bool with_bias) : weight(out, in), bias(with_bias ? out : 0, 1) {}
        Param<T> weight, bias;

        Index in_features() const { return weight.cols; }
        Index out_features() const { return weight.rows; }
        bool has_bias() const { return bias.rows > 0; }

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            out.emplace_back("weight", &weight);
            if (has_bias()) out.emplace_back("bias", &bias);
        }
        void reset_parameters(Rng& rng) override {
            const double bound = 1.0 / std::sqrt(double(in_features()));
            for (Param<T>* p : {&weight, &bias})
                for (Index i = 0; i < p->size(); ++i) p->value_vec()[i] = T(rng.uniform(-bound, bound));
        }
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            const Index rows = in[0].size() / in_features();
            MatrixView<T> y(out, out_features(), rows);
            if (has_bias()) y.colwise() = bias.value_vec();
            moe::detail::matmul<T>(y, weight.value_t(), true, ConstView<T>(in[0].data, in_features(), rows), false,
                                   has_bias());
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            const Index rows = in[0].size() / in_features();
            const ConstView<T> dy(dout, out_features(), rows), x(in[0].data, in_features(), rows);
            if (has_bias()) moe::detail::add_row_sums(dy, bias.grad_vec());
            auto dw_t = weight.grad_t();  // dW^T = x dy^T, in x out
            moe::detail::matmul<T>(dw_t, x, false, dy, true, true);
            if (din[0]) {
                MatrixView<T> dx(din[0], in_features(), rows);
                moe::detail::matmul<T>(dx, weight.value_t(), false, dy, false, !this->fresh[0]);
            }
        }
        bool assigns_fresh_grads() const override { return true; }
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.int_param("in_features"), c.int_param("out_features"),
                                        c.bool_param("bias", true));
    }
};

}  // namespace moe::graph::ops
