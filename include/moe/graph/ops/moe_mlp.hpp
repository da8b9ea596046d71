#pragma once
// moe.MLP (a tower or expert as a node): the library's MLP on the last dimension, sizes [in, hidden...,
// out], activation (relu, gelu, sigmoid, tanh; after every hidden layer, and after the last with
// output_activation), BatchNorm1d after each hidden activation (batchnorm, inputs [B, in] only) and
// Dropout (dropout). Parameters as PyTorch's nn.Sequential names them: "<node>.0.weight", ...
#include "moe/graph/kernel.hpp"
#include "moe/graph/ops/block_params.hpp"
#include "moe/layers/mlp.hpp"

namespace moe::graph::ops {

struct MoeMLP {
    static constexpr const char* type = "moe.MLP";

    static MLPSpec spec(const OpContext& c) {
        MLPSpec s;
        s.sizes = widths_param(c, "sizes");
        if (s.sizes.size() < 2) throw c.error("sizes needs at least an input and an output size, as [64, 32, 1]");
        s.activation = activation_param(c);
        s.batchnorm = c.bool_param("batchnorm", false);
        s.dropout = dropout_param(c, "dropout");
        s.output_activation = c.bool_param("output_activation", false);
        return s;
    }

    static OpShape shape(const OpContext& c) {
        c.allow_params({"sizes", "activation", "batchnorm", "dropout", "output_activation"});
        c.expect_inputs(1, 1);
        const MLPSpec s = spec(c);
        const Shape& x = c.input(0);
        if (x.rank() < 1 || x[x.rank() - 1] != s.sizes.front())
            throw c.error(moe::detail::concat("its input ", to_string(x), " must end in sizes[0] = ", s.sizes.front()));
        if (s.batchnorm && (x.rank() != 2 || x[0] != kBatch))
            throw c.error("batchnorm needs an input [B, " + std::to_string(s.sizes.front()) + "], got " + to_string(x));
        OpShape r;
        r.out = x;
        r.out.dims.back() = s.sizes.back();
        double macs = 0;
        for (std::size_t l = 0; l + 1 < s.sizes.size(); ++l) {
            macs += double(s.sizes[l]) * double(s.sizes[l + 1]);
            r.params += double(s.sizes[l]) * double(s.sizes[l + 1]) + double(s.sizes[l + 1]);
            if (s.batchnorm && l + 2 < s.sizes.size()) r.params += 2.0 * double(s.sizes[l + 1]);
        }
        r.flops_per_sample = 2.0 * macs * (x.per_sample() / double(s.sizes.front()));
        return r;
    }

    /// The library's MLP on the in x rows matrix of the input's rows.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(const MLPSpec& s) : mlp_(s, "moe.MLP") {}

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            mlp_.for_each_parameter("", [&](const std::string& name, Param<T>& p) { out.emplace_back(name, &p); });
        }
        void reset_parameters(Rng& rng) override { mlp_.reset_parameters(rng); }
        void set_training(bool on) override { mlp_.set_training(on); }
        void batchnorms(std::vector<std::pair<std::string, moe::BatchNorm1d<T>*>>& out) override {
            mlp_.for_each_batchnorm(
                "", [&](const std::string& name, moe::BatchNorm1d<T>& bn) { out.emplace_back(name, &bn); });
        }
        void freeze_dropout(bool on) override {
            mlp_.for_each_dropout([&](moe::Dropout<T>& d) { d.freeze_mask(on); });
        }
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            thread_local Buffer<T> a, b;
            const Index rows = in[0].size() / mlp_.in_features();
            const MatrixView<T>& y = mlp_.infer(ConstView<T>(in[0].data, mlp_.in_features(), rows), a, b);
            std::copy(y.data(), y.data() + y.size(), out);
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims&) override {
            const Index rows = in[0].size() / mlp_.in_features();
            const MatrixView<T>& y = mlp_.forward(ConstView<T>(in[0].data, mlp_.in_features(), rows));
            std::copy(y.data(), y.data() + y.size(), out);
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            const Index rows = in[0].size() / mlp_.in_features();
            const MatrixView<T>& dx = mlp_.backward(ConstView<T>(dout, mlp_.out_features(), rows), din[0] != nullptr);
            if (!din[0]) return;
            MatrixView<T> d(din[0], mlp_.in_features(), rows);
            if (this->fresh[0])
                d = dx;
            else
                d += dx;
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        MLP<T> mlp_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(spec(c));
    }
};

}  // namespace moe::graph::ops
