#pragma once
// Knowledge distillation: a student learns from the labels and from a teacher's predictions.
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/view.hpp"
#include "moe/tasks/multitask_loss.hpp"

namespace moe {

/// How one task learns from the teacher: loss = (1 - alpha) hard + alpha soft, alpha in [0, 1];
/// temperature > 0 softens a binary task's logits, the teacher's and the student's alike (Hinton
/// et al. 2015).
struct Distillation {
    double alpha = 0.5;
    double temperature = 1.0;
};

/// The loss of a student: per task t, w_t ((1 - alpha_t) hard_t + alpha_t soft_t), where hard_t is
/// the task's loss on the labels exactly as MultiTaskLoss computes it (loss kind, weight w_t, label
/// mask) and soft_t its loss against the teacher's prediction, over every sample (a teacher
/// predicts where a label is missing too):
///   binary      T^2 mean BCE(sigmoid(z / T), p_T): z the student's logit, p the teacher's probability
///               (in [0, 1]) and p_T = sigmoid(logit(p) / T) its softened version (p_T = p at T = 1;
///               0 and 1 stay 0 and 1); the optimum is z = logit(p) at every T, and the T^2 keeps
///               the soft gradients' size as T grows (Hinton et al.)
///   regression  mean (z - p)^2: p the teacher's output
/// Multiclass tasks are not supported yet (config_error). Shapes: outputs one 1 x B per task,
/// labels, teacher and mask T x B (mask may be empty).
template <class T>
class DistillationLoss {
public:
    using Scalar = T;

    DistillationLoss(std::vector<TaskSpec> tasks, std::vector<Distillation> per_task, std::vector<TaskLoss> losses = {})
        : hard_(tasks, std::move(losses)), tasks_(std::move(tasks)), spec_(std::move(per_task)) {
        detail::require(spec_.size() == tasks_.size(), name_, ": ", spec_.size(), " distillation settings for ", tasks_.size(),
                        " tasks");
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const Distillation& d = spec_[t];
            detail::require(tasks_[t].kind != TaskKind::multiclass, name_, ": task '", tasks_[t].name,
                            "' is multiclass; distillation supports binary and regression tasks");
            detail::require(d.alpha >= 0 && d.alpha <= 1, name_, ": task '", tasks_[t].name, "': alpha must be in [0, 1], got ",
                            d.alpha);
            detail::require(d.temperature > 0 && std::isfinite(d.temperature), name_, ": task '", tasks_[t].name,
                            "': temperature must be finite and > 0, got ", d.temperature);
        }
        soft_.assign(tasks_.size(), T(0));
        total_.assign(tasks_.size(), T(0));
        grad_buffers_.resize(tasks_.size());
        targets_.resize(tasks_.size());
    }

    const std::vector<TaskSpec>& tasks() const { return tasks_; }

    /// The total; per task, task_loss / hard_loss / soft_loss afterwards. The teacher's predictions
    /// are checked first (finite; probabilities in [0, 1] for binary tasks), naming task and sample.
    T forward(const std::vector<ConstView<T>>& outputs, const ConstView<T>& labels, const ConstView<T>& teacher,
              const ConstView<T>& mask = {}) {
        const Index batch = outputs.empty() ? 0 : outputs.front().cols();
        detail::require(batch > 0, name_, "::forward: no samples (", outputs.size(), " outputs of ", batch, " columns)");
        detail::check_shape(teacher, Index(tasks_.size()), batch, name_, "forward", "teacher predictions");
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            for (Index b = 0; b < batch; ++b) {
                const T p = teacher(Index(t), b);
                const bool ok = std::isfinite(double(p)) && (tasks_[t].kind != TaskKind::binary || (p >= T(0) && p <= T(1)));
                detail::require(ok, name_, ": teacher prediction of task '", tasks_[t].name, "' at sample ", b, " is ", p,
                                tasks_[t].kind == TaskKind::binary ? ", expected a probability in [0, 1]" : ", expected a finite value");
            }
        hard_.forward(outputs, labels, mask);  // checks outputs, labels and mask
        outputs_.assign(outputs.begin(), outputs.end());  // views: the outputs must live until backward
        T total = 0;
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const T a = T(spec_[t].alpha), temp = T(spec_[t].temperature);
            const ConstView<T>& z = outputs[t];
            T s = 0;
            auto& targets = targets_[t].resize(1, batch);
            for (Index b = 0; b < batch; ++b) {
                const T p = tasks_[t].kind == TaskKind::binary ? soften(teacher(Index(t), b), temp) : teacher(Index(t), b);
                targets(0, b) = p;
                if (tasks_[t].kind == TaskKind::binary) {
                    const T u = z(0, b) / temp;  // BCE(sigmoid(u), p) = softplus(u) - p u
                    s += (u > 0 ? u + std::log1p(std::exp(-u)) : std::log1p(std::exp(u))) - p * u;
                } else {
                    s += (z(0, b) - p) * (z(0, b) - p);
                }
            }
            s /= T(batch);
            if (tasks_[t].kind == TaskKind::binary) s *= temp * temp;
            soft_[t] = s;
            total_[t] = (1 - a) * hard_.task_loss(t) + a * s;
            total += hard_.effective_weight(t) * total_[t];
        }
        return total;
    }

    /// Per task, d total / d output (1 x B).
    const std::vector<ConstView<T>>& backward() {
        detail::require(!outputs_.empty(), name_, "::backward: no forward before it");
        const std::vector<ConstView<T>>& hard = hard_.backward();  // includes each task's weight
        grads_.clear();
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const T a = T(spec_[t].alpha), temp = T(spec_[t].temperature), w = hard_.effective_weight(t);
            const ConstView<T>& z = outputs_[t];
            const Index batch = z.cols();
            auto& g = grad_buffers_[t].resize(1, batch);
            for (Index b = 0; b < batch; ++b) {
                const T p = targets_[t].view()(0, b);
                T ds;
                if (tasks_[t].kind == TaskKind::binary) {
                    const T u = z(0, b) / temp, q = u >= 0 ? 1 / (1 + std::exp(-u)) : std::exp(u) / (1 + std::exp(u));
                    ds = temp * (q - p) / T(batch);  // d(T^2 mean BCE)/dz = T (sigmoid(z / T) - p) / B
                } else {
                    ds = 2 * (z(0, b) - p) / T(batch);
                }
                g(0, b) = (1 - a) * hard[t](0, b) + a * w * ds;
            }
            grads_.emplace_back(g);
        }
        return grads_;
    }

    /// The teacher's probability p softened at temperature temp: sigmoid(logit(p) / temp), exactly
    /// p at temp = 1 and for p = 0 or 1.
    static T soften(T p, T temp) {
        if (temp == T(1) || p <= T(0) || p >= T(1)) return p;
        const T u = std::log(p / (1 - p)) / temp;
        return u >= 0 ? 1 / (1 + std::exp(-u)) : std::exp(u) / (1 + std::exp(u));
    }

    /// Task t's combined, hard and soft losses of the last forward (unweighted).
    T task_loss(std::size_t t) const { return total_.at(t); }
    const std::vector<T>& task_losses() const { return total_; }
    /// The factor of task t's loss in the total (its weight, following the weight schedule).
    T effective_weight(std::size_t t) const { return hard_.effective_weight(t); }
    /// Moves the hard losses' weight schedule to a 0-based epoch (as MultiTaskLoss::set_epoch).
    void set_epoch(int epoch) { hard_.set_epoch(epoch); }

    // What fit() asks of any loss: learned task weights (uncertainty weighting), which distillation
    // does not have (its hard losses use fixed weights): empty.
    Vector<T>& log_variances() { return no_log_variances_; }
    Vector<T>& log_variance_grads() { return no_log_variances_; }
    void zero_grad() {}
    T hard_loss(std::size_t t) const { return hard_.task_loss(t); }
    T soft_loss(std::size_t t) const { return soft_.at(t); }

private:
    std::string name_ = "moe::DistillationLoss";
    MultiTaskLoss<T> hard_;
    std::vector<TaskSpec> tasks_;
    std::vector<Distillation> spec_;
    std::vector<T> soft_, total_;
    std::vector<ConstView<T>> outputs_;
    std::vector<Buffer<T>> grad_buffers_;
    std::vector<Buffer<T>> targets_;  // each task's soft targets of the last forward (1 x B)
    std::vector<ConstView<T>> grads_;
    Vector<T> no_log_variances_;
};

}  // namespace moe
