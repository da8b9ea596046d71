#pragma once
// torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True): the input's last dims
// must be normalized_shape.
#include <cmath>

#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct LayerNorm {
    static constexpr const char* type = "torch.nn.LayerNorm";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"normalized_shape", "eps", "elementwise_affine"});
        c.expect_inputs(1, 1);
        const std::vector<Index> norm = c.int_list_param("normalized_shape");
        const Shape& x = c.input(0);
        bool ok = !norm.empty() && Index(norm.size()) < x.rank() + 1;
        double n = 1;
        for (std::size_t i = 0; ok && i < norm.size(); ++i) {
            ok = norm[i] > 0 && x[x.rank() - Index(norm.size()) + Index(i)] == norm[i];
            n *= double(norm[i]);
        }
        if (!ok)
            throw c.error("normalized_shape " + to_string(Shape{norm}) + " is not the end of its input's shape " +
                          to_string(x));
        if (!(c.number_param("eps", 1e-5) > 0)) throw c.error("eps must be positive");
        if (norm.size() > 2) throw c.error("normalized_shape of more than 2 dimensions is not supported yet");
        return {x, c.bool_param("elementwise_affine", true) ? 2.0 * n : 0.0, 5.0 * x.per_sample()};
    }

    /// Each row of n = prod(normalized_shape) elements normalised (biased variance), then scaled
    /// and shifted elementwise; weight and bias have the shape of normalized_shape.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(const std::vector<Index>& norm, double eps, bool affine)
            : weight(affine ? norm[0] : 0, norm.size() == 1 ? 1 : norm[1]),
              bias(affine ? norm[0] : 0, norm.size() == 1 ? 1 : norm[1]),
              n_(norm.size() == 1 ? norm[0] : norm[0] * norm[1]),
              eps_(eps) {
            weight.vector = bias.vector = norm.size() == 1;
        }
        Param<T> weight, bias;

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            if (weight.size() == 0) return;
            out.emplace_back("weight", &weight);
            out.emplace_back("bias", &bias);
        }
        void reset_parameters(Rng&) override {
            if (weight.size() == 0) return;
            weight.value_vec().setOnes();
            bias.value_vec().setZero();
        }
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            run(in[0], out, nullptr, nullptr);
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims&) override {
            xhat_.resize(std::size_t(in[0].size()));
            rstd_.resize(std::size_t(in[0].size() / n_));
            run(in[0], out, xhat_.data(), rstd_.data());
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            const Index rows = in[0].size() / n_;
            const bool affine = weight.size() > 0;
            for (Index r = 0; r < rows; ++r) {
                const T* dy = dout + r * n_;
                const T* xh = xhat_.data() + r * n_;
                T mg = 0, mgx = 0;
                for (Index i = 0; i < n_; ++i) {
                    const T g = affine ? dy[i] * weight.value_vec()[i] : dy[i];
                    mg += g;
                    mgx += g * xh[i];
                    if (affine) {
                        weight.grad_vec()[i] += dy[i] * xh[i];
                        bias.grad_vec()[i] += dy[i];
                    }
                }
                mg /= T(n_);
                mgx /= T(n_);
                if (!din[0]) continue;
                T* dx = din[0] + r * n_;
                for (Index i = 0; i < n_; ++i) {
                    const T g = affine ? dy[i] * weight.value_vec()[i] : dy[i];
                    dx[i] += rstd_[std::size_t(r)] * (g - mg - xh[i] * mgx);
                }
            }
        }

    private:
        void run(const In<T>& x, T* out, T* xhat, T* rstd) const {
            const Index rows = x.size() / n_;
            const bool affine = weight.size() > 0;
            for (Index r = 0; r < rows; ++r) {
                const T* xr = x.data + r * n_;
                T mean = 0, var = 0;
                for (Index i = 0; i < n_; ++i) mean += xr[i];
                mean /= T(n_);
                for (Index i = 0; i < n_; ++i) var += (xr[i] - mean) * (xr[i] - mean);
                const T s = T(1) / std::sqrt(var / T(n_) + T(eps_));
                if (rstd) rstd[r] = s;
                for (Index i = 0; i < n_; ++i) {
                    const T h = (xr[i] - mean) * s;
                    if (xhat) xhat[r * n_ + i] = h;
                    out[r * n_ + i] = affine ? h * weight.value_vec()[i] + bias.value_vec()[i] : h;
                }
            }
        }
        Index n_;
        double eps_;
        std::vector<T> xhat_, rstd_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.int_list_param("normalized_shape"), c.number_param("eps", 1e-5),
                                        c.bool_param("elementwise_affine", true));
    }
};

}  // namespace moe::graph::ops
