#pragma once
// moe.MMoE (the mixture of an MMoE as a node): E experts (MLPs in -> expert_hidden... -> expert_dim,
// activation after every layer unless expert_output_activation is false) and `gates` softmax gates
// (Linear, or an MLP with gate_hidden, then softmax over the experts) on an input [B, in]; output
// [B, gates, expert_dim], gate g's mixture of sample b in [b, g]: the towers' inputs, which the
// graph then builds (torch.select is not an op yet: give each tower the [B, gates * expert_dim]
// reshape and a Linear, or use one gate). Parameters as the library's MMoE names them:
// "<node>.experts.{e}.{i}.weight", "<node>.gates.{g}.weight".
#include "moe/graph/kernel.hpp"
#include "moe/graph/ops/block_params.hpp"
#include "moe/models/expert.hpp"
#include "moe/models/mixture_gates.hpp"
#include "moe/routing/combine.hpp"

namespace moe::graph::ops {

struct MoeMMoE {
    static constexpr const char* type = "moe.MMoE";

    struct Spec {
        Index in = 0, experts = 0, expert_dim = 0, gates = 0;
        MLPSpec expert;
        GateOptions gate;
    };
    static Spec spec(const OpContext& c) {
        Spec s;
        s.in = features_input(c);
        s.experts = c.int_param("experts");
        s.expert_dim = c.int_param("expert_dim");
        s.gates = c.int_param("gates");
        if (s.experts <= 0 || s.expert_dim <= 0 || s.gates <= 0)
            throw c.error(moe::detail::concat("experts, expert_dim and gates must be positive, got ", s.experts, ", ",
                                              s.expert_dim, " and ", s.gates));
        const ActivationKind act = activation_param(c);
        const std::vector<Index> hidden = widths_param(c, "expert_hidden"),
                                 gate_hidden = widths_param(c, "gate_hidden");
        const double dropout = dropout_param(c, "expert_dropout");
        s.expert = make_mlp_spec(s.in, hidden, s.expert_dim, act, c.bool_param("batchnorm", false), dropout,
                                 c.bool_param("expert_output_activation", true));
        s.gate.hidden = gate_hidden;
        s.gate.activation = act;
        return s;
    }

    static OpShape shape(const OpContext& c) {
        c.allow_params({"experts", "expert_hidden", "expert_dim", "gates", "gate_hidden", "activation", "batchnorm",
                        "expert_dropout", "expert_output_activation"});
        c.expect_inputs(1, 1);
        const Spec s = spec(c);
        OpShape r;
        r.out = Shape{{kBatch, s.gates, s.expert_dim}};
        double macs = 0;
        for (std::size_t l = 0; l + 1 < s.expert.sizes.size(); ++l) {
            macs += double(s.expert.sizes[l]) * double(s.expert.sizes[l + 1]);
            r.params += double(s.expert.sizes[l]) * double(s.expert.sizes[l + 1]) + double(s.expert.sizes[l + 1]);
            if (s.expert.batchnorm && l + 2 < s.expert.sizes.size()) r.params += 2.0 * double(s.expert.sizes[l + 1]);
        }
        macs *= double(s.experts);
        r.params *= double(s.experts);
        std::vector<Index> g = {s.in};
        g.insert(g.end(), s.gate.hidden.begin(), s.gate.hidden.end());
        g.push_back(s.experts);
        for (std::size_t l = 0; l + 1 < g.size(); ++l) {
            macs += double(s.gates) * double(g[l]) * double(g[l + 1]);
            r.params += double(s.gates) * (double(g[l]) * double(g[l + 1]) + double(g[l + 1]));
        }
        macs += double(s.gates) * double(s.experts) * double(s.expert_dim);  // the gated sums
        r.flops_per_sample = 2.0 * macs;
        return r;
    }

    /// The library's ExpertBank and gates, mixed by the one combine (as MMoE does before its towers).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(const Spec& s)
            : s_(s),
              experts_(s.experts, s.expert, "moe.MMoE.experts"),
              gates_(s.gates, s.in, s.experts, s.gate, "moe.MMoE.gates", /*always_indexed=*/true) {}

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            experts_.for_each_parameter("experts",
                                        [&](const std::string& name, Param<T>& p) { out.emplace_back(name, &p); });
            gates_.for_each_parameter("gates",
                                      [&](const std::string& name, Param<T>& p) { out.emplace_back(name, &p); });
        }
        void reset_parameters(Rng& rng) override {
            experts_.reset_parameters(rng);
            gates_.reset_parameters(rng);
        }
        void set_training(bool on) override {
            experts_.set_training(on);
            gates_.set_training(on);
        }
        void batchnorms(std::vector<std::pair<std::string, moe::BatchNorm1d<T>*>>& out) override {
            experts_.for_each_batchnorm(
                "experts", [&](const std::string& name, moe::BatchNorm1d<T>& bn) { out.emplace_back(name, &bn); });
        }
        void freeze_dropout(bool on) override {
            experts_.for_each_dropout([&](moe::Dropout<T>& d) { d.freeze_mask(on); });
        }
        double aux_loss() const override { return gates_.aux_loss(); }

        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            thread_local Buffer<T> a, b, ga, gb, gc;
            const ConstView<T> x(in[0].data, s_.in, in[0].size() / s_.in);
            const MatrixView<T>& o = experts_.infer(x, a, b);
            const MatrixView<T>& p = gates_.infer(x, ga, gb, gc);
            mix(o.data(), p.data(), out, x.cols());
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims&) override {
            const ConstView<T> x(in[0].data, s_.in, in[0].size() / s_.in);
            const MatrixView<T>& o = experts_.forward(x);
            const MatrixView<T>& p = gates_.forward(x);
            mix(o.data(), p.data(), out, x.cols());
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            const Index batch = in[0].size() / s_.in, d = s_.expert_dim, e = s_.experts, g = s_.gates;
            auto& d_o = dexperts_.resize(e * d, batch);  // written by gate 0 (every gate has every expert)
            auto& dp = dgates_.resize(g * e, batch);
            const T* o = experts_.output().data();
            const T* p = gates_.output().data();
            T* dop = d_o.data();
            moe::detail::combine_backward<T>(
                dout, batch, g, d, [&](Index, Index) { return e; },
                [&](Index b, Index gi, Index j) { return p[(b * g + gi) * e + j]; },
                [&](Index b, Index, Index j) { return o + (b * e + j) * d; },
                [&](Index b, Index, Index j) { return dop + (b * e + j) * d; },
                [&](Index b, Index gi, Index j) -> T& { return dp.data()[(b * g + gi) * e + j]; },
                2.0 * double(d * e * g), /*first_gate_writes=*/true);
            const bool input_grad = din[0] != nullptr;
            const MatrixView<T>& dx_experts = experts_.backward(d_o, input_grad);
            if (!input_grad) {
                gates_.backward(dp, false);
                return;
            }
            MatrixView<T> dx(din[0], s_.in, batch);
            if (this->fresh[0])
                dx = dx_experts;
            else
                dx += dx_experts;
            dx += gates_.backward(dp, true);
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        /// Gate g's mixture of sample b: sum over the experts of p(b, g, e) O_e(b), into out [B, G, D].
        void mix(const T* o, const T* p, T* out, Index batch) const {
            const Index e = s_.experts, g = s_.gates, d = s_.expert_dim;
            moe::detail::combine<T>(
                out, batch, g, d, [&](Index, Index) { return e; },
                [&](Index b, Index gi, Index j) { return p[(b * g + gi) * e + j]; },
                [&](Index b, Index, Index j) { return o + (b * e + j) * d; }, double(d * e * g));
        }
        Spec s_;
        ExpertBank<T> experts_;
        MixtureGates<T> gates_;
        Buffer<T> dexperts_, dgates_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(spec(c));
    }
};

}  // namespace moe::graph::ops
