#pragma once
// torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True): [B, C] or [B, C, L].
#include "moe/graph/kernel.hpp"
#include "moe/layers/batchnorm.hpp"

namespace moe::graph::ops {

struct BatchNorm1d {
    static constexpr const char* type = "torch.nn.BatchNorm1d";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"num_features", "eps", "momentum", "affine"});
        c.expect_inputs(1, 1);
        const Index f = c.int_param("num_features");
        if (f <= 0) throw c.error(moe::detail::concat("num_features must be positive, got ", f));
        const double eps = c.number_param("eps", 1e-5), momentum = c.number_param("momentum", 0.1);
        if (!(eps > 0)) throw c.error(moe::detail::concat("eps must be positive, got ", eps));
        if (!(momentum >= 0 && momentum <= 1))
            throw c.error(moe::detail::concat("momentum must be in [0, 1], got ", momentum));
        const Shape& x = c.input(0);
        if ((x.rank() != 2 && x.rank() != 3) || x[0] != kBatch || x[1] != f)
            throw c.error(moe::detail::concat("expects [B, ", f, "] or [B, ", f, ", L], got ", to_string(x)));
        if (!c.bool_param("affine", true))
            throw c.error("affine: false is not supported yet (BatchNorm1d runs with weight and bias)");
        return {x, 2.0 * double(f), 2.0 * x.per_sample()};
    }

    /// The library's BatchNorm1d (its running statistics are the model file's buffers). [B, C] is
    /// its C x B batch as it is; [B, C, L] runs as the C x (B L) batch of its positions, permuted.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(Index features, double eps, double momentum) : bn_(features, eps, momentum, "BatchNorm1d") {}

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            out.emplace_back("weight", &bn_.weight());
            out.emplace_back("bias", &bn_.bias());
        }
        void reset_parameters(Rng& rng) override { bn_.reset_parameters(rng); }
        void set_training(bool on) override { bn_.set_training(on); }
        void batchnorms(std::vector<std::pair<std::string, moe::BatchNorm1d<T>*>>& out) override {
            out.emplace_back("", &bn_);
        }

        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const Index c = d[1], l = d.size() == 3 ? d[2] : 1, n = d[0];
            const T* x = in[0].data;
            for (Index f = 0; f < c; ++f) {
                const T scale = bn_.weight().value_vec()[f] / std::sqrt(bn_.running_var()[f] + T(bn_.eps()));
                const T shift = bn_.bias().value_vec()[f] - bn_.running_mean()[f] * scale;
                for (Index b = 0; b < n; ++b)
                    for (Index j = 0; j < l; ++j) out[(b * c + f) * l + j] = x[(b * c + f) * l + j] * scale + shift;
            }
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims& d) override {
            const Index c = d[1];
            if (d.size() == 2) {
                const auto& y = bn_.forward(ConstView<T>(in[0].data, c, d[0]));
                std::copy(y.data(), y.data() + y.size(), out);
                return;
            }
            x_.resize(std::size_t(in[0].size()));
            permute(in[0].data, d, {0, 2, 1}, x_.data(), false);  // [B, L, C]
            const auto& y = bn_.forward(ConstView<T>(x_.data(), c, d[0] * d[2]));
            permute(y.data(), Dims{d[0], d[2], c}, {0, 2, 1}, out, false);
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            const Index c = d[1];
            if (d.size() == 2) {
                const auto& dx = bn_.backward(ConstView<T>(dout, c, d[0]));
                if (din[0]) MatrixView<T>(din[0], c, d[0]) += dx;
                return;
            }
            dy_.resize(std::size_t(in[0].size()));
            permute(dout, d, {0, 2, 1}, dy_.data(), false);
            const auto& dx = bn_.backward(ConstView<T>(dy_.data(), c, d[0] * d[2]));
            if (din[0]) permute(dx.data(), Dims{d[0], d[2], c}, {0, 2, 1}, din[0], true);
        }

    private:
        moe::BatchNorm1d<T> bn_;
        std::vector<T> x_, dy_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.int_param("num_features"), c.number_param("eps", 1e-5),
                                        c.number_param("momentum", 0.1));
    }
};

}  // namespace moe::graph::ops
