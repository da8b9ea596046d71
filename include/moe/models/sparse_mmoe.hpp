#pragma once
// Sparse MMoE: an MMoE whose task gates keep only their top k experts, and whose experts run only
// on the samples that at least one task routed to them.
//
//   x ──► GateBank (one softmax gate per task) ──► P: (G E) x B ──► top k per task and sample, weights w
//   x ──► expert e on the samples some task chose it for (gathered, one MLP call)  ──► O_e: D x n_e
//   M: (G D) x B, M_{g,b} = sum over g's k choices of w * O_e(:, slot of b) ──► tower g ──► outputs
//
// Backward mirrors it; the gate gradient goes through the top-k renormalisation and the softmax.
#include <string>
#include <vector>

#include "moe/models/expert.hpp"
#include "moe/models/gate.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/towers.hpp"
#include "moe/routing/top_k.hpp"

namespace moe {

/// An MMoESpec plus the routing of the task gates. shared_gate and batchnorm are not supported (an
/// expert may see a single sample, which batchnorm cannot train on).
struct SparseMMoESpec : MMoESpec {
    Index k = 2;              ///< experts per task and sample, 1 <= k <= experts
    bool renormalize = true;  ///< the k chosen probabilities renormalised to sum to 1 (else raw)
};

/// Multi-gate mixture with top-k task gates. Shapes as MMoE: x is input x B; forward() gives per task
/// its tower output (outputs x B), predict() the predictions after the heads. Parameters named as
/// MMoE's ("experts.{e}.{i}.*", "gates.{t}.*", "towers.{t}.{i}.*"), so an MMoE's state fits.
template <class T>
class SparseMMoE {
public:
    using Scalar = T;
    using Spec = SparseMMoESpec;

    explicit SparseMMoE(const SparseMMoESpec& spec, std::string name = "moe::SparseMMoE")
        : spec_(checked(spec, name)), name_(std::move(name)),
          gates_(static_cast<Index>(spec.tasks.size()), spec.input, spec.experts, spec.gate_hidden, spec.activation,
                 name_ + ".gates", /*shared_input=*/true, /*always_indexed=*/true),
          towers_(spec.tasks, spec.expert_dim, static_cast<Index>(spec.tasks.size()),
                  TowerOptions{spec.tower_hidden, spec.activation, false, spec.tower_dropout}, name_) {
        const MLPSpec e = detail::expert_mlp_spec(spec);  // batchnorm is refused in checked()
        experts_.reserve(static_cast<std::size_t>(spec.experts));
        for (Index i = 0; i < spec.experts; ++i) experts_.emplace_back(e, name_ + ".experts." + std::to_string(i));
        blocks_.resize(static_cast<std::size_t>(spec.experts));
    }

    const SparseMMoESpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    Index in_features() const { return spec_.input; }
    Index experts() const { return spec_.experts; }
    Index gates() const { return gates_.gates(); }
    const std::string& name() const { return name_; }
    /// Samples expert e ran on in the last forward (the union of the tasks' choices).
    Index expert_samples(Index e) const { return static_cast<Index>(blocks_[static_cast<std::size_t>(e)].samples.size()); }
    /// The task mixtures M ((G D) x B) and gate probabilities ((G E) x B) of the last forward.
    const MatrixView<T>& last_mixture() const { return mix_.view(); }
    const MatrixView<T>& last_gate_probabilities() const { return gates_.output(); }

    const std::vector<ConstView<T>>& forward(const ConstView<T>& x) {
        detail::check_rows(x, spec_.input, name_, "forward");
        x_ = x;
        const MatrixView<T>& p = gates_.forward(x);
        choice_.resize(spec_.k, gates() * x.cols());
        weight_.resize(spec_.k, gates() * x.cols());
        route(gates_.logits(), p, choice_, weight_);
        const Index b = x.cols(), d = spec_.expert_dim;
        assign_samples(b);
        for (Index e = 0; e < experts(); ++e) {
            Block& blk = blocks_[static_cast<std::size_t>(e)];
            if (blk.samples.empty()) continue;
            auto& xin = blk.input.resize(spec_.input, static_cast<Index>(blk.samples.size()));
            for (std::size_t s = 0; s < blk.samples.size(); ++s) xin.col(Index(s)) = x.col(blk.samples[s]);
            blk.out = experts_[static_cast<std::size_t>(e)].forward(xin);
        }
        auto& m = mix_.resize(gates() * d, b);
        m.setZero();
        for (Index j = 0; j < b; ++j)
            for (Index g = 0; g < gates(); ++g)
                for (Index r = 0; r < spec_.k; ++r) {
                    const Index e = choice_(r, g + gates() * j);
                    m.block(g * d, j, d, 1) += weight_(r, g + gates() * j) * blocks_[std::size_t(e)].out.col(slot_(e, j));
                }
        return towers_.forward(m);
    }

    /// Back-propagates every task's output gradient; adds parameter gradients and returns dx
    /// (input x B), or an empty matrix unless input_grad.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        const Index b = mix_.cols(), d = spec_.expert_dim, g_count = gates();
        const MatrixView<T>& dm = towers_.backward(doutputs, b, name_);
        for (auto& blk : blocks_) blk.dout.zeros(d, static_cast<Index>(blk.samples.size()));
        auto& dw = dweight_.resize(spec_.k, g_count * b);
        for (Index j = 0; j < b; ++j)
            for (Index g = 0; g < g_count; ++g)
                for (Index r = 0; r < spec_.k; ++r) {
                    const Index c = g + g_count * j, e = choice_(r, c);
                    Block& blk = blocks_[std::size_t(e)];
                    const auto dmg = dm.block(g * d, j, d, 1);
                    dw(r, c) = blk.out.col(slot_(e, j)).dot(dmg.col(0));
                    blk.dout.view().col(slot_(e, j)) += weight_(r, c) * dmg.col(0);
                }
        auto& dx = input_grad ? dx_.zeros(spec_.input, b) : dx_.resize(0, 0);
        for (Index e = 0; e < experts(); ++e) {
            Block& blk = blocks_[static_cast<std::size_t>(e)];
            if (blk.samples.empty()) continue;
            const MatrixView<T>& dxe = experts_[static_cast<std::size_t>(e)].backward(blk.dout.view(), input_grad);
            if (input_grad)
                for (std::size_t s = 0; s < blk.samples.size(); ++s) dx.col(blk.samples[s]) += dxe.col(Index(s));
        }
        // Gate weights -> the probabilities of the chosen experts -> GateBank (softmax, linear).
        auto& dp = dprobs_.zeros(g_count * experts(), b);
        const auto& p = gates_.output();
        for (Index j = 0; j < b; ++j)
            for (Index g = 0; g < g_count; ++g) {
                const Index c = g + g_count * j, base = g * experts();
                detail::top_k_weights_backward<T>(
                    spec_.k, &choice_(0, c), [&](Index i) { return p(base + i, j); }, [&](Index r) { return weight_(r, c); },
                    [&](Index r) { return dw(r, c); }, spec_.renormalize, [&](Index i) -> T& { return dp(base + i, j); });
            }
        const MatrixView<T>& dxg = gates_.backward(dp, input_grad);
        if (input_grad) dx += dxg;
        return dx;
    }

    /// Predictions after the heads, per task, into the caller's workspace. Evaluation semantics;
    /// caches nothing; safe from several threads, one workspace each. Each expert runs on the samples
    /// of a block routed to it.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        return detail::predict_in_blocks(x, tasks(), 0.0, ws, [&](const ConstView<T>& xb, InferenceScratch<T>& s) -> const auto& {
            const Index b = xb.cols(), d = spec_.expert_dim;
            const MatrixView<T>* logits = nullptr;
            const MatrixView<T>& p = gates_.infer(xb, s.c, s.d, &logits);
            auto& choice = s.choice.resize(spec_.k, gates() * b);
            auto& weight = s.weight.resize(spec_.k, gates() * b);
            route(*logits, p, choice, weight);
            auto& m = s.mix.resize(gates() * d, b);
            m.setZero();
            auto& used = s.used.resize(1, b);
            for (Index e = 0; e < experts(); ++e) {
                used.setZero();
                Index n = 0;
                for (Index c = 0; c < choice.size(); ++c)
                    if (choice.data()[c] == e) used(0, c / (spec_.k * gates())) = 1;
                for (Index j = 0; j < b; ++j) n += used(0, j) != 0;
                if (n == 0) continue;
                auto& xin = s.gather.resize(spec_.input, n);
                for (Index j = 0, col = 0; j < b; ++j)
                    if (used(0, j) != 0) xin.col(col++) = xb.col(j);
                const MatrixView<T>& o = experts_[std::size_t(e)].infer(xin, s.a, s.b);
                for (Index j = 0, col = 0; j < b; ++j) {
                    if (used(0, j) == 0) continue;
                    for (Index g = 0; g < gates(); ++g)
                        for (Index r = 0; r < spec_.k; ++r)
                            if (choice(r, g + gates() * j) == e) m.block(g * d, j, d, 1) += weight(r, g + gates() * j) * o.col(col);
                    ++col;
                }
            }
            return towers_.predict(m, s);
        });
    }

    /// Gate probabilities ((G E) x B) before the top k, inference path (gate inspection uses it).
    const MatrixView<T>& gate_probabilities(const ConstView<T>& x, InferenceScratch<T>& s) const {
        detail::check_rows(x, spec_.input, name_, "gate_probabilities");
        return gates_.infer(x, s.c, s.d);
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        for (Index e = 0; e < experts(); ++e)
            experts_[std::size_t(e)].for_each_parameter(join_name(prefix, "experts." + std::to_string(e)), f);
        gates_.for_each_parameter(join_name(prefix, "gates"), f);
        towers_.for_each_parameter(join_name(prefix, "towers"), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        for (auto& e : experts_) e.for_each_dropout(f);
        towers_.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        for (auto& e : experts_) e.reset_parameters(rng);
        gates_.reset_parameters(rng);
        towers_.reset_parameters(rng);
    }
    void set_training(bool on) {
        for (auto& e : experts_) e.set_training(on);
        gates_.set_training(on);
        towers_.set_training(on);
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }

private:
    struct Block {
        std::vector<Index> samples;  // columns of x this expert runs on, in order
        Buffer<T> input, dout;
        ConstView<T> out;
    };

    static const SparseMMoESpec& checked(const SparseMMoESpec& s, const std::string& name) {
        detail::checked_mmoe_spec(s, name);
        detail::require(s.k >= 1 && s.k <= s.experts, name, ": k must be in [1, experts = ", s.experts, "], got ", s.k);
        detail::require(!s.shared_gate, name, ": shared_gate is not supported (use one task's gate per task)");
        detail::require(!s.batchnorm, name, ": batchnorm is not supported: an expert may run on a single sample");
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

    /// Which samples each expert runs on, and each (expert, sample)'s column in its block.
    void assign_samples(Index b) {
        slot_.resize(experts(), b);
        slot_.setConstant(-1);
        for (auto& blk : blocks_) blk.samples.clear();
        for (Index j = 0; j < b; ++j)
            for (Index c = gates() * j; c < gates() * (j + 1); ++c)
                for (Index r = 0; r < spec_.k; ++r) {
                    const Index e = choice_(r, c);
                    if (slot_(e, j) >= 0) continue;
                    auto& samples = blocks_[std::size_t(e)].samples;
                    slot_(e, j) = static_cast<Index>(samples.size());
                    samples.push_back(j);
                }
    }

    SparseMMoESpec spec_;
    std::string name_;
    std::vector<Expert<T>> experts_;
    GateBank<T> gates_;
    TowerSet<T> towers_;
    std::vector<Block> blocks_;
    ConstView<T> x_;
    Matrix<Index> choice_, slot_;
    Matrix<T> weight_;
    Buffer<T> mix_, dweight_, dprobs_, dx_;
};

}  // namespace moe
