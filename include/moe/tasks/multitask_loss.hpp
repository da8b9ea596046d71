#pragma once
// The loss of a multi-task model: one loss per task, weighted, with label masks.
//
//   total = sum_t weight_t * loss_t,   loss_t = mean of the task's loss over its counted samples
//
// A sample counts for task t where mask(t, b) != 0 (all samples without a mask). A post-click task
// (like, finish) is masked by the click so that it learns only where its label exists, as in the
// seed tutorial's clicked_mask; a batch with no counted sample gives loss_t = 0 and no gradient.
#include <string>
#include <variant>
#include <vector>

#include "moe/models/task.hpp"
#include "moe/tasks/losses.hpp"

namespace moe {

enum class LossKind { automatic, bce, mse, huber, cross_entropy };

/// The loss of one task. automatic: BCE for binary, MSE for regression, cross-entropy for multiclass.
struct TaskLoss {
    LossKind kind = LossKind::automatic;
    double weight = 1.0;
    double huber_delta = 1.0;
};

/// Loss of all tasks. Shapes: outputs as the model's forward gives them (task t: outputs_t x B);
/// labels T x B, row t the labels of task t (a class index for multiclass); mask T x B or empty.
template <class T>
class MultiTaskLoss {
public:
    using Scalar = T;

    explicit MultiTaskLoss(std::vector<TaskSpec> tasks, std::vector<TaskLoss> losses = {})
        : tasks_(std::move(tasks)) {
        detail::check_tasks(tasks_, name_);
        if (losses.empty()) losses.resize(tasks_.size());
        detail::require(losses.size() == tasks_.size(), name_, ": expected ", tasks_.size(),
                        " task losses (one per task), got ", losses.size());
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const TaskLoss& l = losses[t];
            const TaskSpec& task = tasks_[t];
            detail::require(std::isfinite(l.weight) && l.weight >= 0, name_, ": weight of task '", task.name,
                            "' must be finite and >= 0, got ", l.weight);
            LossKind kind = l.kind;
            if (kind == LossKind::automatic)
                kind = task.kind == TaskKind::binary       ? LossKind::bce
                       : task.kind == TaskKind::regression ? LossKind::mse
                                                           : LossKind::cross_entropy;
            detail::require((kind == LossKind::cross_entropy) == (task.kind == TaskKind::multiclass), name_,
                            ": task '", task.name, "' is ", to_string(task.kind),
                            "; cross-entropy goes with multiclass tasks and only with them");
            switch (kind) {
                case LossKind::bce: losses_.emplace_back(BCEWithLogitsLoss<T>()); break;
                case LossKind::mse: losses_.emplace_back(MSELoss<T>()); break;
                case LossKind::huber: losses_.emplace_back(HuberLoss<T>(l.huber_delta)); break;
                default: losses_.emplace_back(CrossEntropyLoss<T>()); break;
            }
            weights_.push_back(T(l.weight));
        }
        values_.assign(tasks_.size(), T(0));
        grads_.resize(tasks_.size());
    }

    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    T weight(std::size_t t) const { return weights_.at(t); }
    void set_weight(std::size_t t, double w) {
        detail::require(t < weights_.size() && std::isfinite(w) && w >= 0, name_, ": set_weight(", t, ", ", w,
                        "): needs a task index below ", weights_.size(), " and a finite weight >= 0");
        weights_[t] = T(w);
    }

    /// Weighted sum of the per-task losses (each available from task_loss(t) afterwards).
    T forward(const std::vector<ConstView<T>>& outputs, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
        const Index n_tasks = static_cast<Index>(tasks_.size());
        detail::require(outputs.size() == tasks_.size(), name_, "::forward: expected ", tasks_.size(),
                        " outputs (one per task), got ", outputs.size());
        const Index batch = outputs.front().cols();
        detail::check_shape(labels, n_tasks, batch, name_, "forward", "labels");
        if (mask.size() != 0) detail::check_shape(mask, n_tasks, batch, name_, "forward", "mask");
        T total = 0;
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            if (outputs[t].rows() != tasks_[t].outputs() || outputs[t].cols() != batch) {
                const std::string what = "output of task '" + tasks_[t].name + "'";
                detail::check_shape(outputs[t], tasks_[t].outputs(), batch, name_, "forward", what.c_str());
            }
            const auto ti = static_cast<Index>(t);
            ConstView<T> y(labels.data() + ti, 1, batch, labels.outerStride());
            ConstView<T> w = mask.size() ? ConstView<T>(mask.data() + ti, 1, batch, mask.outerStride()) : ConstView<T>();
            try {
                values_[t] = std::visit([&](auto& loss) { return loss.forward(outputs[t], y, w); }, losses_[t]);
            } catch (const shape_error& e) {  // say which task, keep the type
                throw shape_error(name_ + ": task '" + tasks_[t].name + "': " + e.what());
            } catch (const config_error& e) {
                throw config_error(name_ + ": task '" + tasks_[t].name + "': " + e.what());
            }
            total += weights_[t] * values_[t];
        }
        return total;
    }

    /// Per task, d total / d output (outputs_t x B), times scale.
    const std::vector<ConstView<T>>& backward(T scale = T(1)) {
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            grads_[t] = std::visit([&](auto& loss) -> const MatrixView<T>& { return loss.backward(scale * weights_[t]); },
                                   losses_[t]);
        return grads_;
    }

    /// The unweighted loss of task t in the last forward.
    T task_loss(std::size_t t) const { return values_.at(t); }
    const std::vector<T>& task_losses() const { return values_; }

private:
    std::string name_ = "moe::MultiTaskLoss";
    std::vector<TaskSpec> tasks_;
    std::vector<std::variant<BCEWithLogitsLoss<T>, MSELoss<T>, HuberLoss<T>, CrossEntropyLoss<T>>> losses_;
    std::vector<T> weights_, values_;
    std::vector<ConstView<T>> grads_;
};

}  // namespace moe
