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
// The gated sums are, per sample and gate, axpys over D of the expert columns the gate sees.
#include <optional>
#include <string>
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/models/gate.hpp"

namespace moe {

/// The experts of one PLE level: counts and widths.
struct PLELevelSpec {
    Index shared_experts = 1;          ///< S, experts every task's gate sees
    Index task_experts = 1;            ///< P, experts of each task (0: the level is an MMoE over S experts)
    std::vector<Index> expert_hidden;  ///< hidden widths of each expert
    Index expert_dim = 0;              ///< D, the output width of each expert
};

/// The options every expert of a PLE shares.
struct PLEExpertOptions {
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;
    double dropout = 0.0;
    bool output_activation = true;
};

/// One PLE extraction level (see the diagram above). Shapes: input ((T + 1) in) x B, or in x B at the
/// first level; output ((T + 1) D) x B, or (T D) x B at the last level. Parameters "experts.{e}.*"
/// (e in the order above), "task_gates.{t}.weight/bias", "shared_gate.weight/bias".
template <class T>
class ExtractionLevel {
public:
    using Scalar = T;

    ExtractionLevel(Index tasks, Index in, bool first, bool last, const PLELevelSpec& spec,
                    const PLEExpertOptions& options, const std::string& name)
        : name_(checked(tasks, in, spec, name)), tasks_(tasks), in_(in), first_(first), last_(last),
          own_(spec.task_experts), shared_(spec.shared_experts), dim_(spec.expert_dim),
          experts_(expert_spec(in, spec, options), name + ".experts", experts(), first, /*always_indexed=*/true),
          task_gates_(tasks, in, own_ + shared_, {}, options.activation, name + ".task_gates", first,
                      /*always_indexed=*/true) {
        if (!last) shared_gate_.emplace(1, in, experts(), std::vector<Index>{}, options.activation, name + ".shared_gate");
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

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, input_rows(), name_, "forward");
        x_ = x;
        const ConstView<T> expert_in = first_ ? x : ConstView<T>(replicate(x, replica_));
        const MatrixView<T>& o = experts_.forward(expert_in);
        const MatrixView<T>& p = task_gates_.forward(task_view(x));
        const MatrixView<T>* ps = shared_gate_ ? &shared_gate_->forward(shared_view(x)) : nullptr;
        auto& y = y_.resize(output_rows(), x.cols());
        mix_forward(o, p, ps, y);
        return y;
    }

    /// dy as the output; adds the parameter gradients and returns d input (or an empty matrix).
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        detail::check_shape(dy, output_rows(), x_.cols(), name_, "backward", "output gradient");
        const Index batch = dy.cols();
        auto& d_o = dexperts_.resize(experts() * dim_, batch);
        auto& dp = dtask_gates_.resize(tasks_ * (own_ + shared_), batch);
        auto& dps = dshared_gate_.resize(last_ ? 0 : experts(), batch);
        mix_backward(experts_.output(), task_gates_.output(), shared_gate_ ? &shared_gate_->output() : nullptr, dy, d_o,
                     dp, dps);
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
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b, Buffer<T>& c, Buffer<T>& d,
                               Buffer<T>& out) const {
        detail::check_rows(x, input_rows(), name_, "forward");
        // The expert bank ping-pongs a and b, the gates c and d: the copy goes where neither reads it.
        const ConstView<T> expert_in = first_ ? x : ConstView<T>(replicate(x, out));
        const MatrixView<T>& o = experts_.infer(expert_in, a, b);
        const MatrixView<T>& p = task_gates_.infer(task_view(x), c, d);
        Buffer<T>& gate_free = p.data() == c.view().data() ? d : c;
        Buffer<T>& expert_free = o.data() == a.view().data() ? b : a;
        // The shared gate is a plain linear layer: it needs one buffer for the logits, one for softmax.
        const MatrixView<T>* ps = shared_gate_ ? &shared_gate_->infer(shared_view(x), gate_free, expert_free) : nullptr;
        auto& y = out.resize(output_rows(), x.cols());
        mix_forward(o, p, ps, y);
        return y;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        experts_.for_each_parameter(join_name(prefix, "experts"), f);
        task_gates_.for_each_parameter(join_name(prefix, "task_gates"), f);
        if (shared_gate_) shared_gate_->for_each_parameter(join_name(prefix, "shared_gate"), f);
    }
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        experts_.for_each_batchnorm(join_name(prefix, "experts"), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        experts_.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        experts_.reset_parameters(rng);
        task_gates_.reset_parameters(rng);
        if (shared_gate_) shared_gate_->reset_parameters(rng);
    }
    void set_training(bool on) { experts_.set_training(on); }

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
    static MLPSpec expert_spec(Index in, const PLELevelSpec& s, const PLEExpertOptions& o) {
        MLPSpec e;
        e.sizes.push_back(in);
        e.sizes.insert(e.sizes.end(), s.expert_hidden.begin(), s.expert_hidden.end());
        e.sizes.push_back(s.expert_dim);
        e.activation = o.activation;
        e.batchnorm = o.batchnorm;
        e.dropout = o.dropout;
        e.output_activation = o.output_activation;
        return e;
    }

    /// The input block expert e reads: its task's, or the shared one (T).
    Index owner(Index e) const { return e < tasks_ * own_ ? e / own_ : tasks_; }

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
    static const T* gate_probs(const MatrixView<T>& p, const MatrixView<T>* ps, Index g, Index tasks, Index width, Index b) {
        return g < tasks ? p.data() + b * p.rows() + g * width : ps->data() + b * ps->rows();
    }

    void mix_forward(const MatrixView<T>& o, const MatrixView<T>& p, const MatrixView<T>* ps, MatrixView<T>& y) const {
        const Index width = own_ + shared_, e_all = experts(), dim = dim_;
        detail::for_each_sample(y.cols(), double(dim * (tasks_ * width + (ps ? e_all : 0))), [&](Index b) {
            Eigen::Map<const Matrix<T>> ob(o.data() + b * e_all * dim, dim, e_all);
            for (Index g = 0; g < gates(); ++g) {
                const T* pg = gate_probs(p, ps, g, tasks_, width, b);
                const auto& list = gate_experts_[static_cast<std::size_t>(g)];
                auto yg = y.col(b).segment(g * dim, dim);
                yg = pg[0] * ob.col(list[0]);
                for (std::size_t j = 1; j < list.size(); ++j) yg += pg[j] * ob.col(list[j]);
            }
        });
    }

    // dO_e = sum over the gates g that see e of p_{g,e} dy_g; dp_{g,e} = O_e . dy_g.
    void mix_backward(const MatrixView<T>& o, const MatrixView<T>& p, const MatrixView<T>* ps, const ConstView<T>& dy,
                      MatrixView<T>& d_o, MatrixView<T>& dp, MatrixView<T>& dps) const {
        const Index width = own_ + shared_, e_all = experts(), dim = dim_;
        detail::for_each_sample(dy.cols(), 2.0 * double(dim * (tasks_ * width + (ps ? e_all : 0))), [&](Index b) {
            Eigen::Map<const Matrix<T>> ob(o.data() + b * e_all * dim, dim, e_all);
            Eigen::Map<Matrix<T>> dob(d_o.data() + b * e_all * dim, dim, e_all);
            dob.setZero();
            for (Index g = 0; g < gates(); ++g) {
                const T* pg = gate_probs(p, ps, g, tasks_, width, b);
                T* dpg = g < tasks_ ? dp.data() + b * dp.rows() + g * width : dps.data() + b * dps.rows();
                const auto& list = gate_experts_[static_cast<std::size_t>(g)];
                const auto dyg = dy.col(b).segment(g * dim, dim);
                for (std::size_t j = 0; j < list.size(); ++j) {
                    dob.col(list[j]) += pg[j] * dyg;
                    dpg[j] = ob.col(list[j]).dot(dyg);
                }
            }
        });
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
