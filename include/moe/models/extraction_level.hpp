#pragma once
// One extraction level of PLE (Tang et al., RecSys 2020); a CGC is a PLE of one level.
//
// A level of T tasks has P experts per task and S shared experts, E = T P + S in all, numbered task
// by task and then the shared ones: expert t P + p is task t's p-th, expert T P + s the s-th shared.
// It reads one representation per task and one shared (the first level: x for all of them):
//
//   input_t ──► task t's experts ─┐
//   shared  ──► shared experts  ──┼─► gate t (softmax over task t's P + the S shared, reads input_t) ─► out_t
//                                 └─► shared gate (softmax over all E, reads shared; not in the last
//                                     level) ──────────────────────────────────────────────────────► out_shared
//
// Layout: the input is ((T + 1) in) x B, block t for task t and block T shared (in x B at the first
// level); the output is ((T + 1) D) x B the same way, or (T D) x B at the last level, which has no
// shared gate. All experts run as one grouped MLP: at the first level on x (one GEMM per layer), at
// later levels on a copy of the input with each expert's block in place (expert e reads block e), so
// that the grouped GEMM applies unchanged; the copy is (E in) x B, small next to the experts' work.
// The gated sums are the one combine (routing/combine.hpp) with each gate's expert list.
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/models/gate.hpp"
#include "moe/routing/combine.hpp"

namespace moe {

/// The experts of one PLE level: counts and widths.
struct PLELevelSpec {
    Index shared_experts = 1;          ///< S, experts every task's gate sees
    Index task_experts = 1;            ///< P, experts of each task (0: the level is an MMoE over S experts)
    std::vector<Index> expert_hidden;  ///< hidden widths of each expert
    Index expert_dim = 0;              ///< D, the output width of each expert
};

/// One PLE extraction level (see the diagram above). Shapes: input ((T + 1) in) x B, or in x B at the
/// first level; output ((T + 1) D) x B, or (T D) x B at the last level. Parameters "experts.{e}.*"
/// (e in the order above), "task_gates.{t}.weight/bias", "shared_gate.weight/bias".
template <class T>
class ExtractionLevel : public Composite<ExtractionLevel<T>> {
public:
    using Scalar = T;

    /// expert: the MLP of one expert (its sizes from in to the level's expert_dim).
    ExtractionLevel(Index tasks, Index in, bool first, bool last, const PLELevelSpec& spec, const MLPSpec& expert,
                    ActivationKind activation, const std::string& name)
        : name_(checked(tasks, in, spec, name)), tasks_(tasks), in_(in), first_(first), last_(last),
          own_(spec.task_experts), shared_(spec.shared_experts), dim_(spec.expert_dim),
          experts_(expert, name + ".experts", experts(), first ? GroupedInput::shared : GroupedInput::row_blocks,
                   /*always_indexed=*/true),
          task_gates_(tasks, in, own_ + shared_, {}, activation, name + ".task_gates", first, /*always_indexed=*/true) {
        if (!last) shared_gate_.emplace(1, in, experts(), std::vector<Index>{}, activation, name + ".shared_gate");
        // Gate g's experts, in the order of its probabilities: its task's, then the shared ones.
        for (Index g = 0; g < gates(); ++g) {
            std::vector<Index> list;
            const Index begin = g < tasks ? g * own_ : 0, count = g < tasks ? own_ : tasks * own_;
            for (Index e = 0; e < count; ++e) list.push_back(begin + e);
            for (Index s = 0; s < shared_; ++s) list.push_back(tasks * own_ + s);
            gate_experts_.push_back(std::move(list));
        }
    }

    Index experts() const { return tasks_ * own_ + shared_; }
    /// Gates with an output: one per task, plus the shared gate unless this is the last level.
    Index gates() const { return tasks_ + (last_ ? 0 : 1); }
    Index input_rows() const { return first_ ? in_ : (tasks_ + 1) * in_; }
    Index output_rows() const { return gates() * dim_; }
    Index expert_dim() const { return dim_; }
    /// Samples of the last forward.
    Index last_batch() const { return y_.cols(); }
    const std::string& name() const { return name_; }

    template <class F>
    void for_each_child(F&& f) {
        f("experts", experts_);
        f("task_gates", task_gates_);
        if (shared_gate_) f("shared_gate", *shared_gate_);
    }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, input_rows(), name_, "forward");
        x_ = x;
        const ConstView<T> expert_in = first_ ? x : ConstView<T>(replicate(x, replica_));
        const MatrixView<T>& o = experts_.forward(expert_in);
        const MatrixView<T>& p = task_gates_.forward(task_view(x));
        const MatrixView<T>* ps = shared_gate_ ? &shared_gate_->forward(shared_view(x)) : nullptr;
        auto& y = y_.resize(output_rows(), x.cols());
        mix(o, p, ps, y);
        return y;
    }

    /// dy as the output; adds the parameter gradients and returns d input (or an empty matrix).
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        detail::check_shape(dy, output_rows(), x_.cols(), name_, "backward", "output gradient");
        const Index batch = dy.cols(), e_all = experts(), width = own_ + shared_, d = dim_;
        auto& d_o = dexperts_.zeros(e_all * d, batch);
        auto& dp = dtask_gates_.resize(tasks_ * width, batch);
        auto& dps = dshared_gate_.resize(last_ ? 0 : e_all, batch);
        const T* o = experts_.output().data();
        T* dop = d_o.data();
        const auto& p = task_gates_.output();
        const MatrixView<T>* ps = shared_gate_ ? &shared_gate_->output() : nullptr;
        detail::combine_backward<T>(
            dy.data(), batch, gates(), d, [&](Index, Index g) { return Index(gate_experts_[std::size_t(g)].size()); },
            [&](Index b, Index g, Index j) { return gate_probs(p, ps, g, b)[j]; },
            [&](Index b, Index g, Index j) { return o + (b * e_all + expert(g, j)) * d; },
            [&](Index b, Index g, Index j) { return dop + (b * e_all + expert(g, j)) * d; },
            [&](Index b, Index g, Index j) -> T& {
                return g < tasks_ ? dp.data()[b * dp.rows() + g * width + j] : dps.data()[b * dps.rows() + j];
            },
            2.0 * double(d * (tasks_ * width + (ps ? e_all : 0))));
        const MatrixView<T>& dxe = experts_.backward(d_o, input_grad);
        const MatrixView<T>& dxt = task_gates_.backward(dp, input_grad);
        const MatrixView<T>* dxs = shared_gate_ ? &shared_gate_->backward(dps, input_grad) : nullptr;
        if (!input_grad) return dx_.resize(0, 0);
        auto& dx = dx_.resize(input_rows(), batch);
        if (first_) {
            dx = dxe;
            dx += dxt;
            if (dxs) dx += *dxs;
            return dx;
        }
        // Expert e read the copy of block owner(e): its input gradient goes back there.
        dx.topRows(tasks_ * in_) = dxt;
        if (dxs) dx.bottomRows(in_) = *dxs;
        else dx.bottomRows(in_).setZero();
        for (Index e = 0; e < experts(); ++e) dx.middleRows(owner(e) * in_, in_) += dxe.middleRows(e * in_, in_);
        return dx;
    }

    /// Inference into the caller's scratch (five buffers; the result lives in `out`). Caches nothing.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& expert_a, Buffer<T>& expert_b, Buffer<T>& gate_a,
                               Buffer<T>& gate_b, Buffer<T>& out) const {
        detail::check_rows(x, input_rows(), name_, "forward");
        // The expert bank ping-pongs expert_a/b, the gates gate_a/b: the copy goes where neither reads it.
        const ConstView<T> expert_in = first_ ? x : ConstView<T>(replicate(x, out));
        const MatrixView<T>& o = experts_.infer(expert_in, expert_a, expert_b);
        const MatrixView<T>& p = task_gates_.infer(task_view(x), gate_a, gate_b);
        Buffer<T>& gate_free = p.data() == gate_a.view().data() ? gate_b : gate_a;
        Buffer<T>& expert_free = o.data() == expert_a.view().data() ? expert_b : expert_a;
        // The shared gate is a plain linear layer: it needs one buffer for the logits, one for softmax.
        const MatrixView<T>* ps = shared_gate_ ? &shared_gate_->infer(shared_view(x), gate_free, expert_free) : nullptr;
        auto& y = out.resize(output_rows(), x.cols());
        mix(o, p, ps, y);
        return y;
    }

    /// Probabilities of the last forward: task gates ((T (P + S)) x B) and the shared gate (E x B).
    const MatrixView<T>& last_task_gate_probabilities() const { return task_gates_.output(); }

private:
    static const std::string& checked(Index tasks, Index in, const PLELevelSpec& s, const std::string& name) {
        detail::require(tasks > 0, name, ": needs at least one task, got ", tasks);
        detail::require(in > 0, name, ": input width must be positive, got ", in);
        detail::require(s.shared_experts > 0, name, ": shared_experts must be positive, got ", s.shared_experts);
        detail::require(s.task_experts >= 0, name, ": task_experts must be >= 0, got ", s.task_experts);
        detail::require(s.expert_dim > 0, name, ": expert_dim must be positive, got ", s.expert_dim);
        return name;
    }

    /// The input block expert e reads: its task's, or the shared one (T).
    Index owner(Index e) const { return e < tasks_ * own_ ? e / own_ : tasks_; }
    /// The j-th expert gate g sees.
    Index expert(Index g, Index j) const { return gate_experts_[std::size_t(g)][std::size_t(j)]; }

    /// The first T blocks (what the task gates read) and the shared block of the input.
    ConstView<T> task_view(const ConstView<T>& x) const {
        return first_ ? x : ConstView<T>(x.data(), tasks_ * in_, x.cols(), x.outerStride());
    }
    ConstView<T> shared_view(const ConstView<T>& x) const {
        return first_ ? x : ConstView<T>(x.data() + tasks_ * in_, in_, x.cols(), x.outerStride());
    }

    /// (E in) x B with expert e's input block in rows [e in, (e+1) in).
    const MatrixView<T>& replicate(const ConstView<T>& x, Buffer<T>& into) const {
        auto& r = into.resize(experts() * in_, x.cols());
        for (Index e = 0; e < experts(); ++e) r.middleRows(e * in_, in_) = x.middleRows(owner(e) * in_, in_);
        return r;
    }

    /// The probabilities of gate g for sample b.
    const T* gate_probs(const MatrixView<T>& p, const MatrixView<T>* ps, Index g, Index b) const {
        return g < tasks_ ? p.data() + b * p.rows() + g * (own_ + shared_) : ps->data() + b * ps->rows();
    }

    /// The gated sums: gate g's output is sum over its expert list of p_{g,j} O_{list_g[j]}.
    void mix(const MatrixView<T>& o, const MatrixView<T>& p, const MatrixView<T>* ps, MatrixView<T>& y) const {
        const Index e_all = experts(), d = dim_;
        const T* op = o.data();
        detail::combine<T>(y.data(), y.cols(), gates(), d, [&](Index, Index g) { return Index(gate_experts_[std::size_t(g)].size()); },
                           [&](Index b, Index g, Index j) { return gate_probs(p, ps, g, b)[j]; },
                           [&](Index b, Index g, Index j) { return op + (b * e_all + expert(g, j)) * d; },
                           double(d * (tasks_ * (own_ + shared_) + (ps ? e_all : 0))));
    }

    std::string name_;
    Index tasks_, in_;
    bool first_, last_;
    Index own_, shared_, dim_;
    MLP<T> experts_;
    GateBank<T> task_gates_;
    std::optional<GateBank<T>> shared_gate_;
    std::vector<std::vector<Index>> gate_experts_;
    ConstView<T> x_;
    Buffer<T> replica_, y_, dexperts_, dtask_gates_, dshared_gate_, dx_;
};

}  // namespace moe
