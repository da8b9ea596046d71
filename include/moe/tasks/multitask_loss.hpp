#pragma once
// The loss of a multi-task model: one loss per task, weighted, with label masks.
//
//   fixed weights:  total = sum_t w_t(epoch) loss_t,   w_t(epoch) = w_t0 gamma_t^epoch
//   uncertainty:    total = sum_t c_t exp(-s_t) w_t(epoch) loss_t + s_t / 2
//   loss_t = mean of the task's loss over its counted samples
//
// A sample counts for task t where mask(t, b) != 0 (all samples without a mask): PLE's sample
// spaces, and a recommender's clicked mask for post-click tasks (like, finish), which learn only
// where their label exists. A batch with no counted sample gives loss_t = 0 and no gradient (and,
// under uncertainty weighting, no s_t / 2 term either: a task absent from a batch is not pulled).
//
// PLE's schedule (Tang et al. 2020, section 4.3) is gamma_t < 1: fit() calls set_epoch() each epoch.
// Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018) learns s_t = log sigma_t^2 per task, with
// c_t = 1/2 for regression (Gaussian likelihood) and 1 for classification (their eq. 7 and 10);
// s_t starts at 0 and fit() trains it with the model's learning rate.
#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "moe/models/task.hpp"
#include "moe/tasks/losses.hpp"

namespace moe {

enum class LossKind { automatic, bce, mse, huber, cross_entropy };

/// How the task losses are combined: fixed (scheduled) weights, or learned uncertainty weights on top.
enum class TaskWeighting { fixed, uncertainty };

/// The loss of one task. LossKind::automatic (the default) picks from the task's kind: BCE with
/// logits for binary, MSE for regression, cross-entropy for multiclass. Huber is the other choice
/// for regression tasks.
struct TaskLoss {
    LossKind kind = LossKind::automatic;
    double weight = 1.0;       ///< w_t0
    double huber_delta = 1.0;
    double gamma = 1.0;        ///< per-epoch decay of the weight (PLE's schedule); 1 keeps it fixed
    /// counted: mean over the samples whose mask is non-zero (the default); batch: sum over the
    /// masked samples divided by the batch size, as the common PyTorch recipe (l * mask).sum() / B.
    LossNormalization normalization = LossNormalization::counted;
};

/// Loss of all tasks. Shapes: outputs as the model's forward gives them (task t: outputs_t x B);
/// labels T x B, row t the labels of task t (a class index for multiclass); mask T x B or empty.
/// Under uncertainty weighting, log_variances() (T) are parameters with gradients of their own.
template <class T>
class MultiTaskLoss {
public:
    using Scalar = T;

    explicit MultiTaskLoss(std::vector<TaskSpec> tasks, std::vector<TaskLoss> losses = {},
                           TaskWeighting weighting = TaskWeighting::fixed)
        : tasks_(std::move(tasks)), weighting_(weighting) {
        detail::check_tasks(tasks_, name_);
        if (losses.empty()) losses.resize(tasks_.size());
        detail::require(losses.size() == tasks_.size(), name_, ": expected ", tasks_.size(),
                        " task losses (one per task), got ", losses.size());
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const TaskLoss& l = losses[t];
            const TaskSpec& task = tasks_[t];
            detail::require(std::isfinite(l.weight) && l.weight >= 0, name_, ": weight of task '", task.name,
                            "' must be finite and >= 0, got ", l.weight);
            detail::require(std::isfinite(l.gamma) && l.gamma > 0, name_, ": gamma of task '", task.name,
                            "' must be finite and > 0, got ", l.gamma);
            LossKind kind = l.kind;
            if (kind == LossKind::automatic)
                kind = task.kind == TaskKind::binary       ? LossKind::bce
                       : task.kind == TaskKind::regression ? LossKind::mse
                                                           : LossKind::cross_entropy;
            detail::require((kind == LossKind::cross_entropy) == (task.kind == TaskKind::multiclass), name_,
                            ": task '", task.name, "' is ", to_string(task.kind),
                            "; cross-entropy goes with multiclass tasks and only with them");
            detail::require(kind != LossKind::bce || task.kind == TaskKind::binary, name_, ": task '", task.name,
                            "' is ", to_string(task.kind), "; BCE goes with binary tasks");
            detail::require((kind != LossKind::mse && kind != LossKind::huber) || task.kind == TaskKind::regression,
                            name_, ": task '", task.name, "' is ", to_string(task.kind),
                            "; MSE and Huber go with regression tasks");
            switch (kind) {
                case LossKind::bce: losses_.emplace_back(BCEWithLogitsLoss<T>()); break;
                case LossKind::mse: losses_.emplace_back(MSELoss<T>()); break;
                case LossKind::huber: losses_.emplace_back(HuberLoss<T>(l.huber_delta)); break;
                default: losses_.emplace_back(CrossEntropyLoss<T>()); break;
            }
            std::visit([&](auto& loss) { loss.set_normalization(l.normalization); }, losses_.back());
            normalizations_.push_back(l.normalization);
            base_weights_.push_back(l.weight);
            gammas_.push_back(l.gamma);
            weights_.push_back(T(l.weight));
            likelihood_factor_.push_back(T(task.kind == TaskKind::regression ? 0.5 : 1.0));
        }
        values_.assign(tasks_.size(), T(0));
        counted_.assign(tasks_.size(), 0);
        divisors_.assign(tasks_.size(), 0);
        grads_.resize(tasks_.size());
        const auto n = static_cast<Index>(tasks_.size());
        log_vars_ = Vector<T>::Zero(weighting_ == TaskWeighting::uncertainty ? n : 0);
        log_var_grads_ = Vector<T>::Zero(log_vars_.size());
    }

    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    TaskWeighting weighting() const { return weighting_; }
    /// The current weight w_t(epoch) of task t.
    T weight(std::size_t t) const { return weights_.at(t); }
    /// Sets w_t0 (the weight at epoch 0 of the schedule) and the current weight from it.
    void set_weight(std::size_t t, double w) {
        detail::require(t < weights_.size() && std::isfinite(w) && w >= 0, name_, ": set_weight(", t, ", ", w,
                        "): needs a task index below ", weights_.size(), " and a finite weight >= 0");
        base_weights_[t] = w;
        weights_[t] = T(w * std::pow(gammas_[t], epoch_));
    }
    /// Moves the schedule to a 0-based epoch: w_t = w_t0 gamma_t^epoch.
    void set_epoch(int epoch) {
        detail::require(epoch >= 0, name_, "::set_epoch: epoch must be >= 0, got ", epoch);
        epoch_ = epoch;
        for (std::size_t t = 0; t < weights_.size(); ++t) weights_[t] = T(base_weights_[t] * std::pow(gammas_[t], epoch));
    }

    /// Uncertainty weighting's learned s_t = log sigma_t^2 (empty under fixed weights), and their
    /// gradients, which backward() adds to (zero them with zero_grad() before each batch).
    Vector<T>& log_variances() { return log_vars_; }
    const Vector<T>& log_variances() const { return log_vars_; }
    Vector<T>& log_variance_grads() { return log_var_grads_; }
    const Vector<T>& log_variance_grads() const { return log_var_grads_; }
    void zero_grad() { log_var_grads_.setZero(); }
    /// The factor of task t's loss in the total: w_t, times c_t exp(-s_t) under uncertainty weighting.
    T effective_weight(std::size_t t) const {
        if (weighting_ == TaskWeighting::fixed) return weights_.at(t);
        return weights_.at(t) * likelihood_factor_[t] * std::exp(-log_vars_(static_cast<Index>(t)));
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
            counted_[t] = detail::counted_samples(w, batch);
            divisors_[t] = normalizations_[t] == LossNormalization::batch ? batch : counted_[t];
            total += effective_weight(t) * values_[t];
            if (weighting_ == TaskWeighting::uncertainty && counted_[t] > 0) total += T(0.5) * log_vars_(ti);
        }
        return total;
    }

    /// Per task, d total / d output (outputs_t x B), times scale. Under uncertainty weighting also
    /// adds scale * d total / d s_t to log_variance_grads().
    const std::vector<ConstView<T>>& backward(T scale = T(1)) {
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const T w = effective_weight(t);
            grads_[t] = std::visit([&](auto& loss) -> const MatrixView<T>& { return loss.backward(scale * w); }, losses_[t]);
            if (weighting_ == TaskWeighting::uncertainty && counted_[t] > 0)
                log_var_grads_(static_cast<Index>(t)) += scale * (T(0.5) - w * values_[t]);
        }
        return grads_;
    }

    /// The unweighted loss of task t in the last forward.
    T task_loss(std::size_t t) const { return values_.at(t); }
    /// What task t's loss was divided by in the last forward: its counted samples, or the batch
    /// size under LossNormalization::batch (data-parallel training weighs each process's gradient
    /// by its share of the global divisor).
    Index divisor(std::size_t t) const { return divisors_.at(t); }
    const std::vector<T>& task_losses() const { return values_; }

private:
    std::string name_ = "moe::MultiTaskLoss";
    std::vector<TaskSpec> tasks_;
    std::vector<std::variant<BCEWithLogitsLoss<T>, MSELoss<T>, HuberLoss<T>, CrossEntropyLoss<T>>> losses_;
    TaskWeighting weighting_;
    std::vector<double> base_weights_, gammas_;
    std::vector<T> weights_, values_, likelihood_factor_;
    std::vector<Index> counted_, divisors_;
    std::vector<LossNormalization> normalizations_;
    int epoch_ = 0;
    Vector<T> log_vars_, log_var_grads_;
    std::vector<ConstView<T>> grads_;
};

}  // namespace moe
