#pragma once
// PLE (Progressive Layered Extraction, Tang et al., RecSys 2020) and CGC, its one-level form.
//
//   x ──► level 0 ──► ((T+1) D0) x B ──► level 1 ──► ... ──► last level ──► (T D) x B ──► tower t reads block t
//
// Every level but the last passes on T task representations and one shared (its shared gate mixes
// all its experts); the next level's task-t experts and gate read representation t, its shared
// experts and shared gate the shared one. See extraction_level.hpp for one level's wiring.
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/models/extraction_level.hpp"
#include "moe/models/multitask_spec.hpp"
#include "moe/models/towers.hpp"

namespace moe {

/// Configuration of a PLE (or, with one level, a CGC), checked when the model is built. With the
/// fields of MultiTaskSpec: input, tower_hidden, tasks, activation, batchnorm, tower_dropout.
struct PLESpec : MultiTaskSpec {
    std::vector<PLELevelSpec> levels;      ///< extraction levels, input side first
    double expert_dropout = 0.0;           ///< dropout after the hidden layers of the experts
    bool expert_output_activation = true;  ///< the activation on each expert's output too

    /// The MLP of one expert of a level reading `in` features.
    MLPSpec expert_mlp(const PLELevelSpec& level, Index in) const {
        return make_mlp_spec(in, level.expert_hidden, level.expert_dim, activation, batchnorm, expert_dropout,
                             expert_output_activation);
    }
};

/// Progressive Layered Extraction. Shapes: x is input x B; forward() gives, per task, the tower
/// output the loss sees (outputs x B); predict() the predictions after the heads. Parameters
/// "levels.{l}.experts.{e}.{i}.*", "levels.{l}.task_gates.{t}.*", "levels.{l}.shared_gate.*" (all
/// levels but the last), "towers.{t}.{i}.*", as the PyTorch module in tools/ names them.
template <class T>
class PLE : public Composite<PLE<T>> {
public:
    using Scalar = T;
    using Spec = PLESpec;

    explicit PLE(const PLESpec& spec) : PLE(spec, "moe::PLE") {}

    const PLESpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    /// Surfaces of the tower tree (1: one tower per task).
    Index surfaces() const { return spec_.surfaces; }
    Index in_features() const { return spec_.input; }
    std::size_t levels() const { return levels_.size(); }
    ExtractionLevel<T>& level(std::size_t l) { return levels_.at(l); }
    const std::string& name() const { return name_; }

    template <class F>
    void for_each_child(F&& f) {
        for (std::size_t l = 0; l < levels_.size(); ++l) f("levels." + std::to_string(l), levels_[l]);
        f("towers", towers_);
    }

    /// Training/evaluation forward: per task, the tower output. Keeps views of x for backward.
    const std::vector<ConstView<T>>& forward(const ConstView<T>& x, const SurfaceIds& surfaces = {}) {
        detail::check_rows(x, spec_.input, name_, "forward");
        ConstView<T> h = x;
        for (auto& level : levels_) h = level.forward(h);
        return towers_.forward(h, surfaces);
    }

    /// Back-propagates the gradients of every task's output; adds the parameter gradients and returns
    /// dx (input x B), or an empty matrix unless input_grad.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        const Index batch = levels_.back().last_batch();
        const MatrixView<T>* g = &towers_.backward(doutputs, batch, name_);
        for (std::size_t l = levels_.size(); l-- > 0;) g = &levels_[l].backward(*g, input_grad || l > 0);
        return *g;
    }

    /// Predictions after the heads, per task (outputs x B), into the caller's workspace; evaluation
    /// semantics, caches nothing, safe from several threads with one workspace each.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        surfaces.check(x.cols(), spec_.surfaces, name_, "predict");
        return detail::predict_in_blocks(
            x, surfaces, tasks(), macs_per_sample_,
            ws, [&](const ConstView<T>& xb, const SurfaceIds& sb, InferenceScratch<T>& s) -> const auto& {
                ConstView<T> h = xb;
                Buffer<T>* out = &s.mix;
                Buffer<T>* other = &s.next_mix;  // levels alternate between these two
                for (const auto& level : levels_) {
                    h = level.infer(h, s.experts_a, s.experts_b, s.gates_a, s.gates_b, *out);
                    std::swap(out, other);
                }
                return towers_.predict(h, s, sb);
            });
    }

protected:
    PLE(const PLESpec& spec, const std::string& name)
        : spec_(checked(spec, name)), name_(name), levels_(make_levels(spec, name)),
          towers_(spec, spec.levels.back().expert_dim, static_cast<Index>(spec.tasks.size()), name),
          macs_per_sample_(macs_per_sample(spec)) {}

private:
    static const PLESpec& checked(const PLESpec& s, const std::string& name) {
        detail::check_multitask_spec(s, name);
        detail::require(!s.levels.empty(), name, ": needs at least one level, got 0");
        return s;
    }
    static std::vector<ExtractionLevel<T>> make_levels(const PLESpec& s, const std::string& name) {
        std::vector<ExtractionLevel<T>> levels;
        levels.reserve(s.levels.size());
        Index in = s.input;
        for (std::size_t l = 0; l < s.levels.size(); ++l) {
            levels.emplace_back(static_cast<Index>(s.tasks.size()), in, l == 0, l + 1 == s.levels.size(), s.levels[l],
                                s.expert_mlp(s.levels[l], in), s.activation, name + ".levels." + std::to_string(l));
            in = s.levels[l].expert_dim;
        }
        return levels;
    }
    /// Multiply-adds of one sample's prediction (for the threading decision).
    static double macs_per_sample(const PLESpec& s) {
        double macs = 0, in = double(s.input);
        const double tasks = double(s.tasks.size());
        for (const auto& level : s.levels) {
            const double experts = tasks * double(level.task_experts) + double(level.shared_experts);
            double w = in;
            for (Index h : level.expert_hidden) macs += experts * w * double(h), w = double(h);
            macs += experts * w * double(level.expert_dim);
            macs += in * experts * 2.0;  // gates, roughly
            in = double(level.expert_dim);
        }
        for (const auto& t : s.tasks) {
            double tin = in;
            for (Index h : s.tower_hidden) macs += tin * double(h), tin = double(h);
            macs += tin * double(t.outputs());
        }
        return macs;
    }

    PLESpec spec_;
    std::string name_;
    std::vector<ExtractionLevel<T>> levels_;
    TowerSet<T> towers_;
    double macs_per_sample_;
};

/// Customized Gate Control (the PLE paper's single-level model): a PLE with exactly one level.
/// Shapes and parameter names as PLE ("levels.0.experts.{e}...", "levels.0.task_gates.{t}...").
template <class T>
class CGC : public PLE<T> {
public:
    using Spec = PLESpec;
    explicit CGC(const PLESpec& spec) : PLE<T>(one_level(spec), "moe::CGC") {}

private:
    static const PLESpec& one_level(const PLESpec& s) {
        detail::require(s.levels.size() == 1, "moe::CGC: a CGC has exactly one level, got ", s.levels.size(),
                        " (use moe::PLE for several)");
        return s;
    }
};

}  // namespace moe
