#pragma once
// The towers of a multi-task model.
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/models/inference.hpp"
#include "moe/models/multitask_spec.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/tower.hpp"

namespace moe {

/// One tower per task on a stacked representation M of (G D) x B: tower t reads block g(t) = t when
/// G equals the number of tasks (a mixture per task), else block 0 (one representation for all).
/// With spec.surfaces = S > 1, a tower tree: one tower per task and surface, and each sample goes
/// through its own surface's towers only (the samples are gathered by surface, so no tower computes
/// a sample it does not own). Parameters "{t}.0.weight", ... per tower (t the task index), or
/// "{t}.{s}.0.weight", ... with surfaces.
template <class T>
class TowerSet : public Composite<TowerSet<T>> {
public:
    TowerSet(const MultiTaskSpec& spec, Index in, Index blocks, const std::string& name)
        : in_(in), blocks_(blocks), surfaces_(spec.surfaces), name_(name) {
        detail::check_tasks(spec.tasks, name);
        detail::require(spec.surfaces >= 1, name, ": surfaces must be at least 1, got ", spec.surfaces);
        towers_.reserve(spec.tasks.size() * std::size_t(surfaces_));
        for (std::size_t t = 0; t < spec.tasks.size(); ++t)
            for (Index s = 0; s < surfaces_; ++s)
                towers_.emplace_back(spec.tower_mlp(in, spec.tasks[t]), spec.tasks[t],
                                     name + ".towers." + child_name(t, s));
        tasks_ = spec.tasks;
        logits_.resize(spec.tasks.size());
        outputs_.resize(spec.tasks.size());
    }

    std::size_t size() const { return tasks_.size(); }
    Index surfaces() const { return surfaces_; }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    Tower<T>& tower(std::size_t t, Index surface = 0) {
        return towers_.at(t * std::size_t(surfaces_) + std::size_t(surface));
    }
    const Tower<T>& tower(std::size_t t, Index surface = 0) const {
        return towers_.at(t * std::size_t(surfaces_) + std::size_t(surface));
    }

    template <class F>
    void for_each_child(F&& f) {
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            for (Index s = 0; s < surfaces_; ++s) f(child_name(t, s), tower(t, s));
    }

    /// Tower outputs (what the losses see) of every task, from M ((G D) x B, contiguous), each
    /// sample through its surface's towers.
    const std::vector<ConstView<T>>& forward(const ConstView<T>& m, const SurfaceIds& surfaces) {
        const Index batch = m.cols();
        surfaces.check(batch, surfaces_, name_, "forward");
        grouped_ = surfaces_ > 1 && surfaces.per_sample();
        if (!grouped_) {
            uniform_ = surfaces_ == 1 ? 0 : surfaces[0];  // [0] is the batch's one surface (and reads no id of an empty batch)
            for (std::size_t t = 0; t < tasks_.size(); ++t) logits_[t] = tower(t, uniform_).forward(block(m, t));
            return logits_;
        }
        groups_.build(surfaces, batch, surfaces_);
        auto& mp = gathered_.resize(m.rows(), batch);
        for (Index i = 0; i < batch; ++i) mp.col(i) = m.col(groups_.order[std::size_t(i)]);
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            auto& out = outputs_[t].resize(tasks_[t].outputs(), batch);
            for (Index s = 0; s < surfaces_; ++s) {
                const Index start = groups_.start(s), count = groups_.count(s);
                if (count == 0) continue;
                const MatrixView<T>& y = tower(t, s).forward(columns(block(ConstView<T>(mp), t), start, count));
                for (Index i = 0; i < count; ++i) out.col(groups_.order[std::size_t(start + i)]) = y.col(i);
            }
            logits_[t] = out;
        }
        return logits_;
    }

    /// dM ((G D) x B) from the gradients of every tower's output (of the last forward).
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& dlogits, Index batch, const std::string& who) {
        detail::require(dlogits.size() == tasks_.size(), who, "::backward: expected ", tasks_.size(),
                        " output gradients (one per task), got ", dlogits.size());
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            if (dlogits[t].rows() != tasks_[t].outputs() || dlogits[t].cols() != batch) {
                const std::string what = "output gradient of task '" + tasks_[t].name + "'";
                detail::check_shape(dlogits[t], tasks_[t].outputs(), batch, who, "backward", what.c_str());
            }
        const bool shared_block = blocks_ < static_cast<Index>(tasks_.size());
        auto& dm = dm_.resize(blocks_ * in_, batch);
        if (!grouped_) {
            if (shared_block) dm.setZero();
            for (std::size_t t = 0; t < tasks_.size(); ++t) {
                const MatrixView<T>& dx = tower(t, uniform_).backward(dlogits[t], true);
                // A pass over memory (1 MB per task at batch 2048): over the threads, in column ranges.
                detail::for_each_range(batch, detail::kElementwiseFlops * double(dx.size()), [&](Index c0, Index c1) {
                    auto blk = dm.block(block_row(t), c0, in_, c1 - c0);
                    if (shared_block)
                        blk += dx.middleCols(c0, c1 - c0);
                    else
                        blk = dx.middleCols(c0, c1 - c0);
                });
            }
            return dm;
        }
        // Grouped: the towers see their surface's samples in group order; dM is built in that order
        // and scattered back to the batch's.
        auto& dmp = dgathered_.resize(blocks_ * in_, batch);
        if (shared_block) dmp.setZero();
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            for (Index s = 0; s < surfaces_; ++s) {
                const Index start = groups_.start(s), count = groups_.count(s);
                if (count == 0) continue;
                auto& dl = dgroup_.resize(tasks_[t].outputs(), count);
                for (Index i = 0; i < count; ++i) dl.col(i) = dlogits[t].col(groups_.order[std::size_t(start + i)]);
                const MatrixView<T>& dx = tower(t, s).backward(dl, true);
                auto blk = dmp.block(block_row(t), start, in_, count);
                if (shared_block)
                    blk += dx;
                else
                    blk = dx;
            }
        for (Index i = 0; i < batch; ++i) dm.col(groups_.order[std::size_t(i)]) = dmp.col(i);
        return dm;
    }

    /// Predictions (after the heads) of every task into the scratch (the towers alternate between
    /// its towers_a and towers_b buffers), each sample through its surface's towers. Caches nothing.
    /// The surfaces are checked by the caller.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& m, InferenceScratch<T>& s,
                                             const SurfaceIds& surfaces) const {
        if (s.preds.size() != tasks_.size()) s.preds.resize(tasks_.size());
        if (s.out.size() != tasks_.size()) s.out.resize(tasks_.size());
        if (surfaces_ == 1 || !surfaces.per_sample()) {
            const Index one = surfaces_ == 1 ? 0 : surfaces[0];
            for (std::size_t t = 0; t < tasks_.size(); ++t)
                s.out[t] = tower(t, one).predict(block(m, t), s.towers_a, s.towers_b, s.preds[t]);
            return s.out;
        }
        const Index batch = m.cols();
        s.groups.build(surfaces, batch, surfaces_);
        auto& mp = s.surface_in.resize(m.rows(), batch);
        for (Index i = 0; i < batch; ++i) mp.col(i) = m.col(s.groups.order[std::size_t(i)]);
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            auto& out = s.preds[t].resize(tasks_[t].outputs(), batch);
            for (Index g = 0; g < surfaces_; ++g) {
                const Index start = s.groups.start(g), count = s.groups.count(g);
                if (count == 0) continue;
                const MatrixView<T>& y = tower(t, g).predict(columns(block(ConstView<T>(mp), t), start, count),
                                                             s.towers_a, s.towers_b, s.surface_out);
                for (Index i = 0; i < count; ++i) out.col(s.groups.order[std::size_t(start + i)]) = y.col(i);
            }
            s.out[t] = out;
        }
        return s.out;
    }

private:
    std::string child_name(std::size_t t, Index s) const {
        return surfaces_ == 1 ? std::to_string(t) : std::to_string(t) + "." + std::to_string(s);
    }
    Index block_row(std::size_t t) const {
        return blocks_ == static_cast<Index>(tasks_.size()) ? static_cast<Index>(t) * in_ : 0;
    }
    ConstView<T> block(const ConstView<T>& m, std::size_t t) const {
        return ConstView<T>(m.data() + block_row(t), in_, m.cols(), m.outerStride());
    }
    static ConstView<T> columns(const ConstView<T>& v, Index start, Index count) {
        return ConstView<T>(v.data() + start * v.outerStride(), v.rows(), count, v.outerStride());
    }

    Index in_, blocks_, surfaces_;
    std::string name_;
    std::vector<Tower<T>> towers_;  // task-major: task t, surface s at t * surfaces_ + s
    std::vector<TaskSpec> tasks_;
    std::vector<ConstView<T>> logits_;
    std::vector<Buffer<T>> outputs_;  // grouped forward: each task's outputs in batch order
    detail::SurfaceGroups groups_;
    bool grouped_ = false;
    Index uniform_ = 0;
    Buffer<T> gathered_, dgathered_, dgroup_, dm_;
};

}  // namespace moe
