#pragma once
// MMoE (Ma et al., KDD 2018) and OMoE: shared experts, one gate per task, one tower per task.
//
//   x ──► ExpertBank (E experts, one GEMM for all first layers) ──► O: (E D) x B ─┐
//   x ──► MixtureGates (G gates: softmax or DSelect-k)          ──► P: (G E) x B ─┴► combine: M_b = O_b P_b
//   M: (G D) x B ──► tower t reads block t (MMoE, G = tasks) or block 0 (OMoE, G = 1) ──► outputs
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/models/expert.hpp"
#include "moe/models/mixture_gates.hpp"
#include "moe/models/multitask_spec.hpp"
#include "moe/models/towers.hpp"
#include "moe/routing/combine.hpp"

namespace moe {

/// Configuration of an MMoE or OMoE, checked when the model is built. With the fields of
/// MultiTaskSpec: input, tower_hidden, tasks, activation, batchnorm, tower_dropout.
struct MMoESpec : MultiTaskSpec {
    Index experts = 0;                     ///< E
    std::vector<Index> expert_hidden;      ///< hidden widths of each expert
    Index expert_dim = 0;                  ///< D, the output width of each expert
    std::vector<Index> gate_hidden;        ///< softmax gates: hidden widths before the softmax (usually none)
    double expert_dropout = 0.0;           ///< dropout after the hidden layers of the experts
    bool expert_output_activation = true;  ///< the activation on each expert's output too
    bool shared_gate = false;              ///< one gate for all tasks: OMoE
    GateKind gate = GateKind::softmax;     ///< the gates' kind
    Index dselect_k = 2;                   ///< DSelect-k gates: experts per gate
    double dselect_gamma = 1.0;            ///< DSelect-k gates: width of the smooth step
    double dselect_entropy = 0.0;          ///< DSelect-k gates: weight of the entropy regulariser

    /// The MLP of one expert.
    MLPSpec expert_mlp() const {
        return make_mlp_spec(input, expert_hidden, expert_dim, activation, batchnorm, expert_dropout, expert_output_activation);
    }
    GateOptions gate_options() const { return {gate, gate_hidden, activation, dselect_k, dselect_gamma, dselect_entropy}; }
};

namespace detail {
/// The checks every MMoE-like model makes of its spec; returns it.
inline const MMoESpec& checked_mmoe_spec(const MMoESpec& s, const std::string& name) {
    check_multitask_spec(s, name);
    require(s.experts > 0, name, ": experts must be positive, got ", s.experts);
    require(s.expert_dim > 0, name, ": expert_dim must be positive, got ", s.expert_dim);
    require(s.gate == GateKind::softmax || s.gate_hidden.empty(), name, ": gate_hidden applies to softmax gates only");
    return s;
}
}  // namespace detail

/// Multi-gate Mixture-of-Experts. Shapes: x is input x B; forward() gives, per task, the tower
/// output the loss sees (outputs x B: 1 for binary and regression, C for multiclass); predict()
/// the predictions after the heads. Parameters: "experts.{e}.{i}.*", "gates.{t}.*" (or "gate.*"
/// for OMoE), "towers.{t}.{i}.*", as the PyTorch module in tools/ names them. With DSelect-k gates
/// aux_loss() is the gates' regulariser, whose gradient backward() includes.
template <class T>
class MMoE : public Composite<MMoE<T>> {
public:
    using Scalar = T;
    using Spec = MMoESpec;

    explicit MMoE(const MMoESpec& spec) : MMoE(spec, spec.shared_gate ? "moe::OMoE" : "moe::MMoE") {}

    const MMoESpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    /// Surfaces of the tower tree (1: one tower per task).
    Index surfaces() const { return spec_.surfaces; }
    Index in_features() const { return spec_.input; }
    Index experts() const { return spec_.experts; }
    Index gates() const { return gates_.gates(); }
    const std::string& name() const { return name_; }
    double aux_loss() const { return gates_.aux_loss(); }

    template <class F>
    void for_each_child(F&& f) {
        f("experts", experts_);
        f(spec_.shared_gate ? "gate" : "gates", gates_);
        f("towers", towers_);
    }

    /// Training/evaluation forward: per task, the tower output. Keeps views of x for backward.
    const std::vector<ConstView<T>>& forward(const ConstView<T>& x, const SurfaceIds& surfaces = {}) {
        detail::check_rows(x, spec_.input, name_, "forward");
        const MatrixView<T>& o = experts_.forward(x);
        const MatrixView<T>& p = gates_.forward(x);
        auto& m = mix_.resize(gates() * spec_.expert_dim, x.cols());
        mix(o, p, m);
        return towers_.forward(m, surfaces);
    }

    /// Back-propagates the gradients of every task's output (as forward returned them); adds the
    /// parameter gradients and returns dx (input x B), or an empty matrix unless input_grad.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        const Index batch = mix_.cols(), d = spec_.expert_dim, e = experts(), g = gates();
        const MatrixView<T>& dm = towers_.backward(doutputs, batch, name_);
        auto& d_o = dexperts_.resize(e * d, batch);  // written by gate 0 (every gate has every expert)
        auto& dp = dgates_.resize(g * e, batch);
        const T* o = experts_.output().data();
        const T* p = gates_.output().data();
        T* dop = d_o.data();
        detail::combine_backward<T>(
            dm.data(), batch, g, d, [&](Index, Index) { return e; }, [&](Index b, Index gi, Index j) { return p[(b * g + gi) * e + j]; },
            [&](Index b, Index, Index j) { return o + (b * e + j) * d; }, [&](Index b, Index, Index j) { return dop + (b * e + j) * d; },
            [&](Index b, Index gi, Index j) -> T& { return dp.data()[(b * g + gi) * e + j]; }, 2.0 * double(d * e * g),
            /*first_gate_writes=*/true);
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
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        surfaces.check(x.cols(), spec_.surfaces, name_, "predict");
        return detail::predict_in_blocks(
            x, surfaces, tasks(), macs_per_sample_,
            ws, [&](const ConstView<T>& xb, const SurfaceIds& sb, InferenceScratch<T>& s) -> const auto& {
                const MatrixView<T>& o = experts_.infer(xb, s.experts_a, s.experts_b);
                const MatrixView<T>& p = gates_.infer(xb, s.gates_a, s.gates_b, s.gates_out);
                auto& m = s.mix.resize(gates() * spec_.expert_dim, xb.cols());
                mix(o, p, m);
                return towers_.predict(m, s, sb);
            });
    }

    /// Gate weights ((G E) x B), inference path, into the caller's scratch. Used by gate inspection.
    const MatrixView<T>& gate_probabilities(const ConstView<T>& x, InferenceScratch<T>& s) const {
        detail::check_rows(x, spec_.input, name_, "gate_probabilities");
        return gates_.infer(x, s.gates_a, s.gates_b, s.gates_out);
    }
    /// Gate weights and expert outputs of the last forward.
    const MatrixView<T>& last_gate_probabilities() const { return gates_.output(); }
    const MatrixView<T>& last_expert_outputs() const { return experts_.output(); }

protected:
    MMoE(const MMoESpec& spec, const std::string& name)
        : spec_(detail::checked_mmoe_spec(spec, name)), name_(name), experts_(spec.experts, spec.expert_mlp(), name + ".experts"),
          gates_(spec.shared_gate ? 1 : static_cast<Index>(spec.tasks.size()), spec.input, spec.experts, spec.gate_options(),
                 name + (spec.shared_gate ? ".gate" : ".gates"), /*always_indexed=*/!spec.shared_gate),
          towers_(spec, spec.expert_dim, spec.shared_gate ? 1 : static_cast<Index>(spec.tasks.size()), name),
          macs_per_sample_(macs_per_sample(spec)) {}

private:
    /// The gated sums: mixture g of sample b is sum over all E experts of p(g, e) O_e (combine's
    /// term list is 0..E-1 for every gate).
    void mix(const MatrixView<T>& o, const MatrixView<T>& p, MatrixView<T>& m) const {
        const Index e = experts(), g = gates(), d = spec_.expert_dim;
        const T* op = o.data();
        const T* pp = p.data();
        detail::combine<T>(m.data(), m.cols(), g, d, [&](Index, Index) { return e; },
                           [&](Index b, Index gi, Index j) { return pp[(b * g + gi) * e + j]; },
                           [&](Index b, Index, Index j) { return op + (b * e + j) * d; }, double(d * e * g));
    }

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
    MixtureGates<T> gates_;
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
