#pragma once
// The towers of a multi-task model.
#include <string>
#include <vector>

#include "moe/models/inference.hpp"
#include "moe/models/tower.hpp"

namespace moe {

/// How the towers of a model are built: hidden widths and the options of their hidden layers.
struct TowerOptions {
    std::vector<Index> hidden;
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;
    double dropout = 0.0;
};

/// One tower per task on a stacked representation M of (G D) x B: tower t reads block g(t) = t when
/// G equals the number of tasks (a mixture per task), else block 0 (one representation for all).
/// Parameters "{t}.0.weight", ... per tower (t the task index).
template <class T>
class TowerSet {
public:
    TowerSet(const std::vector<TaskSpec>& tasks, Index in, Index blocks, const TowerOptions& options,
             const std::string& name)
        : in_(in), blocks_(blocks) {
        detail::check_tasks(tasks, name);
        towers_.reserve(tasks.size());
        for (std::size_t t = 0; t < tasks.size(); ++t) {
            MLPSpec spec;
            spec.sizes.push_back(in);
            spec.sizes.insert(spec.sizes.end(), options.hidden.begin(), options.hidden.end());
            spec.sizes.push_back(tasks[t].outputs());
            spec.activation = options.activation;
            spec.batchnorm = options.batchnorm;
            spec.dropout = options.dropout;
            towers_.emplace_back(spec, tasks[t], name + ".towers." + std::to_string(t));
            tasks_.push_back(tasks[t]);
        }
        logits_.resize(tasks.size());
    }

    std::size_t size() const { return towers_.size(); }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    Tower<T>& tower(std::size_t t) { return towers_.at(t); }

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

    /// Predictions (after the heads) of every task into the scratch; a and b are used for the towers.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& m, InferenceScratch<T>& ws) const {
        if (ws.preds.size() != towers_.size()) ws.preds.resize(towers_.size());
        if (ws.out.size() != towers_.size()) ws.out.resize(towers_.size());
        for (std::size_t t = 0; t < towers_.size(); ++t) ws.out[t] = towers_[t].predict(block(m, t), ws.a, ws.b, ws.preds[t]);
        return ws.out;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        for (std::size_t t = 0; t < towers_.size(); ++t) towers_[t].for_each_parameter(join_name(prefix, std::to_string(t)), f);
    }
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        for (std::size_t t = 0; t < towers_.size(); ++t) towers_[t].for_each_batchnorm(join_name(prefix, std::to_string(t)), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        for (auto& tw : towers_) tw.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        for (auto& tw : towers_) tw.reset_parameters(rng);
    }
    void set_training(bool on) {
        for (auto& tw : towers_) tw.set_training(on);
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
