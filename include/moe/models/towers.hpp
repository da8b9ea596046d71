#pragma once
// The towers of a multi-task model.
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/models/inference.hpp"
#include "moe/models/multitask_spec.hpp"
#include "moe/models/tower.hpp"

namespace moe {

/// One tower per task on a stacked representation M of (G D) x B: tower t reads block g(t) = t when
/// G equals the number of tasks (a mixture per task), else block 0 (one representation for all).
/// Parameters "{t}.0.weight", ... per tower (t the task index).
template <class T>
class TowerSet : public Composite<TowerSet<T>> {
public:
    TowerSet(const MultiTaskSpec& spec, Index in, Index blocks, const std::string& name) : in_(in), blocks_(blocks) {
        detail::check_tasks(spec.tasks, name);
        towers_.reserve(spec.tasks.size());
        for (std::size_t t = 0; t < spec.tasks.size(); ++t)
            towers_.emplace_back(spec.tower_mlp(in, spec.tasks[t]), spec.tasks[t], name + ".towers." + std::to_string(t));
        tasks_ = spec.tasks;
        logits_.resize(spec.tasks.size());
    }

    std::size_t size() const { return towers_.size(); }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    Tower<T>& tower(std::size_t t) { return towers_.at(t); }

    template <class F>
    void for_each_child(F&& f) {
        for (std::size_t t = 0; t < towers_.size(); ++t) f(std::to_string(t), towers_[t]);
    }

    /// Tower outputs (what the losses see) of every task, from M ((G D) x B, contiguous).
    const std::vector<ConstView<T>>& forward(const ConstView<T>& m) {
        for (std::size_t t = 0; t < towers_.size(); ++t) logits_[t] = towers_[t].forward(block(m, t));
        return logits_;
    }

    /// dM ((G D) x B) from the gradients of every tower's output.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& dlogits, Index batch, const std::string& who) {
        detail::require(dlogits.size() == towers_.size(), who, "::backward: expected ", towers_.size(),
                        " output gradients (one per task), got ", dlogits.size());
        auto& dm = dm_.resize(blocks_ * in_, batch);
        if (blocks_ < static_cast<Index>(towers_.size())) dm.setZero();
        for (std::size_t t = 0; t < towers_.size(); ++t) {
            if (dlogits[t].rows() != towers_[t].outputs() || dlogits[t].cols() != batch) {
                const std::string what = "output gradient of task '" + tasks_[t].name + "'";
                detail::check_shape(dlogits[t], towers_[t].outputs(), batch, who, "backward", what.c_str());
            }
            const MatrixView<T>& dx = towers_[t].backward(dlogits[t], true);
            auto blk = dm.middleRows(block_row(t), in_);
            if (blocks_ < static_cast<Index>(towers_.size())) blk += dx;
            else blk = dx;
        }
        return dm;
    }

    /// Predictions (after the heads) of every task into the scratch (the towers alternate between its towers_a and towers_b
    /// buffers). Caches nothing.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& m, InferenceScratch<T>& s) const {
        if (s.preds.size() != towers_.size()) s.preds.resize(towers_.size());
        if (s.out.size() != towers_.size()) s.out.resize(towers_.size());
        for (std::size_t t = 0; t < towers_.size(); ++t)
            s.out[t] = towers_[t].predict(block(m, t), s.towers_a, s.towers_b, s.preds[t]);
        return s.out;
    }

private:
    Index block_row(std::size_t t) const { return blocks_ == static_cast<Index>(towers_.size()) ? static_cast<Index>(t) * in_ : 0; }
    ConstView<T> block(const ConstView<T>& m, std::size_t t) const {
        return ConstView<T>(m.data() + block_row(t), in_, m.cols(), m.outerStride());
    }

    Index in_, blocks_;
    std::vector<Tower<T>> towers_;
    std::vector<TaskSpec> tasks_;
    std::vector<ConstView<T>> logits_;
    Buffer<T> dm_;
};

}  // namespace moe
