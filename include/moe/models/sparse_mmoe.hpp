#pragma once
// Sparse MMoE: an MMoE whose task gates keep only their top k experts, and whose experts run only
// on the samples that at least one task routed to them.
//
//   x ──► GateBank (one softmax gate per task) ──► P: (G E) x B ──► top k per task and sample, weights w
//   x ──► DispatchPlan (routing/dispatch.hpp): the (sample, expert) pairs some task chose, sorted
//         into per-expert blocks (a sample two tasks send to one expert runs once); x gathered
//   experts: one grouped MLP, expert e on its block (GroupedLinear's column segments)
//   M: (G D) x B, M_{g,b} = sum over g's k choices of w * out(slot) (routing/combine.hpp) ──► tower g
//
// Backward mirrors it; the gate gradient goes through the top-k renormalisation and the softmax.
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/models/gate.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/towers.hpp"
#include "moe/routing/combine.hpp"
#include "moe/routing/dispatch.hpp"
#include "moe/routing/top_k.hpp"

namespace moe {

/// An MMoESpec plus the routing of the task gates. shared_gate, batchnorm and DSelect-k gates are
/// not supported (an expert may see a single sample, which batchnorm cannot train on).
struct SparseMMoESpec : MMoESpec {
    Index k = 2;              ///< experts per task and sample, 1 <= k <= experts
    bool renormalize = true;  ///< the k chosen probabilities renormalised to sum to 1 (else raw)
};

/// Multi-gate mixture with top-k task gates. Shapes as MMoE: x is input x B; forward() gives per task
/// its tower output (outputs x B), predict() the predictions after the heads. Parameters named as
/// MMoE's ("experts.{e}.{i}.*", "gates.{t}.*", "towers.{t}.{i}.*"), so an MMoE's state fits.
template <class T>
class SparseMMoE : public Composite<SparseMMoE<T>> {
public:
    using Scalar = T;
    using Spec = SparseMMoESpec;

    explicit SparseMMoE(const SparseMMoESpec& spec, std::string name = "moe::SparseMMoE")
        : spec_(checked(spec, name)), name_(std::move(name)),
          experts_(spec.expert_mlp(), name_ + ".experts", spec.experts, GroupedInput::column_segments, /*always_indexed=*/true),
          gates_(static_cast<Index>(spec.tasks.size()), spec.input, spec.experts, spec.gate_hidden, spec.activation,
                 name_ + ".gates", /*shared_input=*/true, /*always_indexed=*/true),
          towers_(spec, spec.expert_dim, static_cast<Index>(spec.tasks.size()), name_) {}

    const SparseMMoESpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    /// Surfaces of the tower tree (1: one tower per task).
    Index surfaces() const { return spec_.surfaces; }
    Index in_features() const { return spec_.input; }
    Index experts() const { return spec_.experts; }
    Index gates() const { return gates_.gates(); }
    const std::string& name() const { return name_; }
    /// Samples expert e ran on in the last forward (the union of the tasks' choices).
    Index expert_samples(Index e) const { return plan_.kept.at(std::size_t(e)); }
    /// The task mixtures M ((G D) x B) and gate probabilities ((G E) x B) of the last forward.
    const MatrixView<T>& last_mixture() const { return mix_.view(); }
    const MatrixView<T>& last_gate_probabilities() const { return gates_.output(); }

    template <class F>
    void for_each_child(F&& f) {
        f("experts", experts_);
        f("gates", gates_);
        f("towers", towers_);
    }
    /// PyTorch's defaults, expert after expert (as a ModuleList of experts initialises), then the
    /// gates and towers.
    void reset_parameters(Rng& rng) {
        for (Index e = 0; e < spec_.experts; ++e)
            for (std::size_t l = 0; l < experts_.num_linear(); ++l) experts_.linear(l).reset_group(e, rng);
        experts_.for_each_dropout([&](Dropout<T>& d) { d.reset_parameters(rng); });
        gates_.reset_parameters(rng);
        towers_.reset_parameters(rng);
    }

    const std::vector<ConstView<T>>& forward(const ConstView<T>& x, const SurfaceIds& surfaces = {}) {
        detail::check_rows(x, spec_.input, name_, "forward");
        const Index b = x.cols(), d = spec_.expert_dim, g = gates(), k = spec_.k;
        const MatrixView<T>& p = gates_.forward(x);
        auto& choice = choice_.resize(k, g * b);
        auto& weight = weight_.resize(k, g * b);
        route(gates_.logits(), p, choice, weight);
        plan_.build(choice.data(), k * g, b, experts(), 0);
        // Every buffer sized for the most slots a batch can have (a sample runs each expert once):
        // a step whose routing sends more samples to the experts allocates nothing.
        const Index max_slots = b * std::min(experts(), k * g);
        xp_.reserve(spec_.input * max_slots);
        experts_.reserve_columns(max_slots);
        auto& xp = xp_.resize(spec_.input, plan_.slots);
        detail::gather(x, plan_, xp);
        const MatrixView<T>& out = experts_.forward_segments(ConstView<T>(xp), plan_.offset.data(), false);
        auto& m = mix_.resize(g * d, b);
        mix(out, plan_, weight, m);
        return towers_.forward(m, surfaces);
    }

    /// Back-propagates every task's output gradient; adds parameter gradients and returns dx
    /// (input x B), or an empty matrix unless input_grad.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        const Index b = mix_.cols(), d = spec_.expert_dim, g = gates(), k = spec_.k;
        const MatrixView<T>& dm = towers_.backward(doutputs, b, name_);
        dout_.reserve(d * b * std::min(experts(), k * g));
        auto& dout = dout_.zeros(d, plan_.slots);  // two tasks' choices of one expert share a slot
        auto& dw = dweight_.resize(k, g * b);
        const T* o = experts_.output().data();
        T* dop = dout.data();
        const auto& w = weight_.view();
        detail::combine_backward<T>(
            dm.data(), b, g, d, [&](Index, Index) { return k; }, [&](Index j, Index gi, Index r) { return w(r, gi + g * j); },
            [&](Index j, Index gi, Index r) { return o + plan_.slot(r + k * gi, j) * d; },
            [&](Index j, Index gi, Index r) { return dop + plan_.slot(r + k * gi, j) * d; },
            [&](Index j, Index gi, Index r) -> T& { return dw(r, gi + g * j); }, 2.0 * double(k * d * g));
        const MatrixView<T>& dxp = experts_.backward(ConstView<T>(dout), input_grad);
        auto& dx = input_grad ? dx_.resize(spec_.input, b) : dx_.resize(0, 0);
        if (input_grad) detail::gather_backward(ConstView<T>(dxp), plan_, dx, /*accumulate=*/false);
        // Gate weights -> the probabilities of the chosen experts -> GateBank (softmax, linear).
        auto& dp = dprobs_.zeros(g * experts(), b);
        const auto& p = gates_.output();
        const auto& choice = choice_.view();
        for (Index j = 0; j < b; ++j)
            for (Index gi = 0; gi < g; ++gi) {
                const Index c = gi + g * j, base = gi * experts();
                detail::top_k_weights_backward<T>(
                    k, &choice(0, c), [&](Index i) { return p(base + i, j); }, [&](Index r) { return w(r, c); },
                    [&](Index r) { return dw(r, c); }, spec_.renormalize, [&](Index i) -> T& { return dp(base + i, j); });
            }
        const MatrixView<T>& dxg = gates_.backward(dp, input_grad);
        if (input_grad) dx += dxg;
        return dx;
    }

    /// Predictions after the heads, per task, into the caller's workspace. Evaluation semantics;
    /// caches nothing; safe from several threads, one workspace each. Each expert runs on the samples
    /// of a block routed to it.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        surfaces.check(x.cols(), spec_.surfaces, name_, "predict");
        return detail::predict_in_blocks(
            x, surfaces, tasks(), 0.0,
            ws, [&](const ConstView<T>& xb, const SurfaceIds& sb, InferenceScratch<T>& s) -> const auto& {
                const Index b = xb.cols(), g = gates(), k = spec_.k;
                const MatrixView<T>* logits = nullptr;
                const MatrixView<T>& p = gates_.infer(xb, s.gates_a, s.gates_b, &logits);
                auto& choice = s.route_choice.resize(k, g * b);
                auto& weight = s.route_weight.resize(k, g * b);
                route(*logits, p, choice, weight);
                s.plan.build(choice.data(), k * g, b, experts(), 0);
                auto& xp = s.gathered.resize(spec_.input, s.plan.slots);
                detail::gather(xb, s.plan, xp);
                const MatrixView<T>& out =
                    experts_.infer_segments(ConstView<T>(xp), s.plan.offset.data(), false, s.experts_a, s.experts_b);
                auto& m = s.mix.resize(g * spec_.expert_dim, b);
                mix(out, s.plan, weight, m);
                return towers_.predict(m, s, sb);
            });
    }

    /// Gate probabilities ((G E) x B) before the top k, inference path (gate inspection uses it).
    const MatrixView<T>& gate_probabilities(const ConstView<T>& x, InferenceScratch<T>& s) const {
        detail::check_rows(x, spec_.input, name_, "gate_probabilities");
        return gates_.infer(x, s.gates_a, s.gates_b);
    }

private:
    static const SparseMMoESpec& checked(const SparseMMoESpec& s, const std::string& name) {
        detail::checked_mmoe_spec(s, name);
        detail::require(s.k >= 1 && s.k <= s.experts, name, ": k must be in [1, experts = ", s.experts, "], got ", s.k);
        detail::require(!s.shared_gate, name, ": shared_gate is not supported (use one task's gate per task)");
        detail::require(!s.batchnorm, name, ": batchnorm is not supported: an expert may run on a single sample");
        detail::require(s.gate == GateKind::softmax, name, ": its gates are top-k softmax gates; DSelect-k is an MMoE gate");
        return s;
    }

    /// Top k of each task's gate per sample: column c = g + G j of choice/weight. The choice is made
    /// on the logits, not the probabilities: the same order, but exact ties stay ties (a vectorised
    /// exp rounds differently in different SIMD lanes), so ties go to the lower index in every build.
    template <class C, class W>
    void route(const MatrixView<T>& logits, const MatrixView<T>& p, C& choice, W& weight) const {
        const Index e_count = experts(), k = spec_.k;
        for (Index j = 0; j < p.cols(); ++j)
            for (Index g = 0; g < gates(); ++g) {
                const Index c = g + gates() * j;
                const auto prob = [&](Index i) { return p(g * e_count + i, j); };
                detail::select_top_k(e_count, k, [&](Index i) { return logits(g * e_count + i, j); }, &choice(0, c));
                detail::top_k_weights<T>(k, &choice(0, c), prob, spec_.renormalize, [&](Index r) -> T& { return weight(r, c); });
            }
    }

    /// The task mixtures: gate g of sample j sums its k choices' slots.
    void mix(const MatrixView<T>& out, const DispatchPlan& plan, const MatrixView<T>& weight, MatrixView<T>& m) const {
        const Index g = gates(), k = spec_.k, d = spec_.expert_dim;
        const T* o = out.data();
        detail::combine<T>(m.data(), m.cols(), g, d, [&](Index, Index) { return k; },
                           [&](Index j, Index gi, Index r) { return weight(r, gi + g * j); },
                           [&](Index j, Index gi, Index r) { return o + plan.slot(r + k * gi, j) * d; }, double(k * d * g));
    }

    SparseMMoESpec spec_;
    std::string name_;
    MLP<T> experts_;
    GateBank<T> gates_;
    TowerSet<T> towers_;
    DispatchPlan plan_;
    Buffer<Index> choice_;
    Buffer<T> weight_, xp_, mix_, dout_, dweight_, dprobs_, dx_;
};

}  // namespace moe
