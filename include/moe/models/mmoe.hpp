#pragma once
// MMoE (Ma et al., KDD 2018) and OMoE: shared experts, softmax gates, one tower per task.
//
//   x ──► ExpertBank (E experts, one GEMM for all first layers) ──► O: (E D) x B ─┐
//   x ──► GateBank (G gates, one GEMM, softmax per gate)        ──► P: (G E) x B ─┴► M_b = O_b P_b
//   M: (G D) x B ──► tower t reads block t (MMoE, G = tasks) or block 0 (OMoE, G = 1) ──► outputs
#include <string>
#include <vector>

#include "moe/models/expert.hpp"
#include "moe/models/gate.hpp"
#include "moe/models/gated_mixture.hpp"
#include "moe/models/towers.hpp"

namespace moe {

/// Configuration of an MMoE or OMoE, checked when the model is built.
struct MMoESpec {
    Index input = 0;                   ///< features of x
    Index experts = 0;                 ///< E
    std::vector<Index> expert_hidden;  ///< hidden widths of each expert
    Index expert_dim = 0;              ///< D, the output width of each expert
    std::vector<Index> gate_hidden;    ///< hidden widths of each gate before its softmax (usually none)
    std::vector<Index> tower_hidden;   ///< hidden widths of each tower
    std::vector<TaskSpec> tasks;
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;                ///< BatchNorm1d after the hidden activations of experts and towers
    double expert_dropout = 0.0;           ///< dropout after the hidden layers of the experts
    double tower_dropout = 0.0;            ///< dropout after the hidden layers of the towers
    bool expert_output_activation = true;  ///< the activation on each expert's output too
    bool shared_gate = false;              ///< one gate for all tasks: OMoE
};

namespace detail {
/// The checks every MMoE-like model makes of its spec; returns it.
inline const MMoESpec& checked_mmoe_spec(const MMoESpec& s, const std::string& name) {
    detail::require(s.input > 0, name, ": input must be positive, got ", s.input);
    detail::require(s.experts > 0, name, ": experts must be positive, got ", s.experts);
    detail::require(s.expert_dim > 0, name, ": expert_dim must be positive, got ", s.expert_dim);
    detail::check_tasks(s.tasks, name);
    return s;
}

/// The MLPSpec of one expert of an MMoE-like model.
inline MLPSpec expert_mlp_spec(const MMoESpec& s) {
    MLPSpec e;
    e.sizes.push_back(s.input);
    e.sizes.insert(e.sizes.end(), s.expert_hidden.begin(), s.expert_hidden.end());
    e.sizes.push_back(s.expert_dim);
    e.activation = s.activation;
    e.batchnorm = s.batchnorm;
    e.dropout = s.expert_dropout;
    e.output_activation = s.expert_output_activation;
    return e;
}
}  // namespace detail

/// Multi-gate Mixture-of-Experts. Shapes: x is input x B; forward() gives, per task, the tower
/// output the loss sees (outputs x B: 1 for binary and regression, C for multiclass); predict()
/// the predictions after the heads. Parameters: "experts.{e}.{i}.*", "gates.{t}.*" (or "gate.*"
/// for OMoE), "towers.{t}.{i}.*", as the PyTorch module in tools/ names them.
template <class T>
class MMoE {
public:
    using Scalar = T;
    using Spec = MMoESpec;

    explicit MMoE(const MMoESpec& spec) : MMoE(spec, spec.shared_gate ? "moe::OMoE" : "moe::MMoE") {}

    const MMoESpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    Index in_features() const { return spec_.input; }
    Index experts() const { return spec_.experts; }
    Index gates() const { return gates_.gates(); }
    const std::string& name() const { return name_; }

    /// Training/evaluation forward: per task, the tower output. Keeps views of x for backward.
    const std::vector<ConstView<T>>& forward(const ConstView<T>& x) {
        detail::check_rows(x, spec_.input, name_, "forward");
        const MatrixView<T>& o = experts_.forward(x);
        const MatrixView<T>& p = gates_.forward(x);
        auto& m = mix_.resize(gates() * spec_.expert_dim, x.cols());
        detail::gated_mix_forward(o.data(), p.data(), m.data(), x.cols(), spec_.expert_dim, experts(), gates());
        return towers_.forward(m);
    }

    /// Back-propagates the gradients of every task's output (as forward returned them); adds the
    /// parameter gradients and returns dx (input x B), or an empty matrix unless input_grad.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        const Index batch = mix_.cols();
        const MatrixView<T>& dm = towers_.backward(doutputs, batch, name_);
        auto& d_o = dexperts_.resize(experts() * spec_.expert_dim, batch);
        auto& dp = dgates_.resize(gates() * experts(), batch);
        detail::gated_mix_backward(experts_.output().data(), gates_.output().data(), dm.data(), d_o.data(), dp.data(),
                                   batch, spec_.expert_dim, experts(), gates());
        const MatrixView<T>& dx_experts = experts_.backward(d_o, input_grad);
        if (!input_grad) {
            gates_.backward(dp, false);
            return dx_.resize(0, 0);
        }
        auto& dx = dx_.resize(spec_.input, batch);
        dx = dx_experts;
        dx += gates_.backward(dp, true);
        return dx;
    }

    /// Predictions after the heads, per task (outputs x B), into the caller's workspace. Evaluation
    /// semantics whatever the mode; caches nothing; safe from several threads, one workspace each.
    /// Blocks of samples run on separate threads (see detail::predict_in_blocks).
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        return detail::predict_in_blocks(x, tasks(), macs_per_sample_, ws,
                                         [&](const ConstView<T>& xb, InferenceScratch<T>& s) -> const auto& {
                                             const MatrixView<T>& o = experts_.infer(xb, s.a, s.b);
                                             const MatrixView<T>& p = gates_.infer(xb, s.c, s.d);
                                             auto& m = s.mix.resize(gates() * spec_.expert_dim, xb.cols());
                                             detail::gated_mix_forward(o.data(), p.data(), m.data(), xb.cols(),
                                                                       spec_.expert_dim, experts(), gates());
                                             return towers_.predict(m, s);
                                         });
    }

    /// Gate probabilities ((G E) x B), inference path, into the caller's scratch. Used by gate inspection.
    const MatrixView<T>& gate_probabilities(const ConstView<T>& x, InferenceScratch<T>& s) const {
        detail::check_rows(x, spec_.input, name_, "gate_probabilities");
        return gates_.infer(x, s.c, s.d);
    }
    /// Gate probabilities and expert outputs of the last forward.
    const MatrixView<T>& last_gate_probabilities() const { return gates_.output(); }
    const MatrixView<T>& last_expert_outputs() const { return experts_.output(); }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        experts_.for_each_parameter(join_name(prefix, "experts"), f);
        gates_.for_each_parameter(join_name(prefix, spec_.shared_gate ? "gate" : "gates"), f);
        towers_.for_each_parameter(join_name(prefix, "towers"), f);
    }
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        experts_.for_each_batchnorm(join_name(prefix, "experts"), f);
        towers_.for_each_batchnorm(join_name(prefix, "towers"), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        experts_.for_each_dropout(f);
        towers_.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        experts_.reset_parameters(rng);
        gates_.reset_parameters(rng);
        towers_.reset_parameters(rng);
    }
    void set_training(bool on) {
        experts_.set_training(on);
        gates_.set_training(on);
        towers_.set_training(on);
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }

protected:
    MMoE(const MMoESpec& spec, const std::string& name)
        : spec_(detail::checked_mmoe_spec(spec, name)), name_(name),
          experts_(spec.experts, detail::expert_mlp_spec(spec), name + ".experts"),
          gates_(spec.shared_gate ? 1 : static_cast<Index>(spec.tasks.size()), spec.input, spec.experts, spec.gate_hidden,
                 spec.activation, name + (spec.shared_gate ? ".gate" : ".gates"), /*shared_input=*/true,
                 /*always_indexed=*/!spec.shared_gate),
          towers_(spec.tasks, spec.expert_dim, spec.shared_gate ? 1 : static_cast<Index>(spec.tasks.size()),
                  TowerOptions{spec.tower_hidden, spec.activation, spec.batchnorm, spec.tower_dropout}, name),
          macs_per_sample_(macs_per_sample(spec)) {}

private:
    /// Multiply-adds of one sample's prediction (for the threading decision).
    static double macs_per_sample(const MMoESpec& s) {
        double macs = 0, in = double(s.input);
        for (Index h : s.expert_hidden) macs += in * double(h), in = double(h);
        macs += in * double(s.expert_dim);
        macs *= double(s.experts);
        macs += double(s.input) * double(s.experts) * double(s.tasks.size());
        for (const auto& t : s.tasks) {
            double tin = double(s.expert_dim);
            for (Index h : s.tower_hidden) macs += tin * double(h), tin = double(h);
            macs += tin * double(t.outputs());
        }
        return macs;
    }

    MMoESpec spec_;
    std::string name_;
    ExpertBank<T> experts_;
    GateBank<T> gates_;
    TowerSet<T> towers_;
    Buffer<T> mix_, dexperts_, dgates_, dx_;
    double macs_per_sample_;
};

/// One-gate Mixture-of-Experts: an MMoE whose tasks share one gate (and so one mixture).
/// Shapes and parameters as MMoE, with the gate named "gate.*".
template <class T>
class OMoE : public MMoE<T> {
public:
    using Spec = MMoESpec;
    explicit OMoE(MMoESpec spec) : MMoE<T>(with_shared_gate(std::move(spec)), "moe::OMoE") {}

private:
    static MMoESpec with_shared_gate(MMoESpec s) {
        s.shared_gate = true;
        return s;
    }
};

}  // namespace moe
