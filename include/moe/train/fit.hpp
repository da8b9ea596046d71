#pragma once
// A training loop for the multi-task models: shuffled mini-batches, Adam/AdamW, clipping, cosine LR,
// per-epoch losses and validation metrics, progress output, a callback, non-finite loss detection.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "moe/core/model.hpp"
#include "moe/optim/adam.hpp"
#include "moe/optim/clip.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/tasks/distillation.hpp"
#include "moe/tasks/multitask_loss.hpp"
#include "moe/train/evaluate.hpp"

namespace moe {

/// What fit() prints. automatic: a progress bar when the stream is std::cout on a terminal, plain
/// per-epoch lines otherwise.
enum class Progress { automatic, bar, lines, silent };

/// One epoch's results, passed to the callback and kept in the history.
struct EpochReport {
    int epoch = 0;                         ///< 1-based
    double train_loss = 0;                 ///< mean of the batches' weighted total loss
    std::vector<double> train_task_losses; ///< mean of the batches' per-task losses
    std::vector<TaskMetrics> validation;   ///< empty without validation data
    std::vector<double> task_weights;      ///< each task's factor in the total at the epoch's end
    double lr = 0;                         ///< learning rate used in this epoch
    double seconds = 0;
};

/// Settings of fit(). All are checked before the first step (config_error naming the field).
struct FitOptions {
    int epochs = 10;                      ///< passes over the training data, > 0
    Index batch_size = 256;               ///< samples per step, >= 2
    double lr = 1e-3;                     ///< Adam's learning rate, > 0
    double weight_decay = 0.0;            ///< L2 penalty (Adam) or decoupled decay (AdamW), >= 0
    bool decoupled_weight_decay = false;  ///< AdamW instead of Adam's L2 term
    double clip_norm = 0.0;               ///< clip the global gradient norm to this; 0 = off
    bool cosine_lr = false;               ///< cosine annealing from lr to min_lr over the epochs
    double min_lr = 0.0;                  ///< the cosine schedule's floor, in [0, lr]
    std::uint64_t seed = 0;               ///< shuffling
    Progress progress = Progress::automatic;
    std::ostream* out = &std::cout;       ///< where progress goes (its format state is restored); null = silent
    /// Called after every epoch; return false to stop (early stopping).
    std::function<bool(const EpochReport&)> on_epoch;
};

struct FitHistory {
    std::vector<EpochReport> epochs;
    bool stopped_by_callback = false;
};

namespace detail {
inline void check_fit_options(const FitOptions& o) {
    require(o.epochs > 0, "moe::fit: epochs must be positive, got ", o.epochs);
    require(o.batch_size > 1, "moe::fit: batch_size must be at least 2, got ", o.batch_size);
    require(o.lr > 0 && std::isfinite(o.lr), "moe::fit: lr must be positive and finite, got ", o.lr);
    require(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "moe::fit: weight_decay must be finite and >= 0, got ",
            o.weight_decay);
    require(o.clip_norm >= 0 && std::isfinite(o.clip_norm), "moe::fit: clip_norm must be finite and >= 0, got ",
            o.clip_norm);
    require(o.min_lr >= 0 && o.min_lr <= o.lr, "moe::fit: min_lr must be in [0, lr = ", o.lr, "], got ", o.min_lr);
}

/// fit's Adam settings: the learning rate and weight decay of the options.
inline AdamOptions adam_options(const FitOptions& o) {
    AdamOptions ao;
    ao.lr = o.lr;
    ao.weight_decay = o.weight_decay;
    ao.decoupled_weight_decay = o.decoupled_weight_decay;
    return ao;
}

/// Restores a stream's format flags and precision when it goes out of scope: fit prints with
/// std::fixed and its own precision, and must not leave them on the caller's stream.
class StreamStateGuard {
public:
    explicit StreamStateGuard(std::ostream* os) : os_(os) {
        if (os_) flags_ = os_->flags(), precision_ = os_->precision();
    }
    ~StreamStateGuard() {
        if (os_) os_->flags(flags_), os_->precision(precision_);
    }
    StreamStateGuard(const StreamStateGuard&) = delete;
    StreamStateGuard& operator=(const StreamStateGuard&) = delete;

private:
    std::ostream* os_;
    std::ios_base::fmtflags flags_{};
    std::streamsize precision_ = 0;
};

inline std::string format_metrics(const std::vector<TaskMetrics>& ms) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(4);
    for (std::size_t i = 0; i < ms.size(); ++i) {
        const auto& m = ms[i];
        os << (i ? " | " : "") << m.task;
        if (m.kind == TaskKind::binary) {
            if (m.auc) os << " auc " << *m.auc;
            else os << " auc n/a";
        } else if (m.kind == TaskKind::regression) {
            os << " rmse " << m.rmse;
        } else {
            os << " acc " << m.accuracy;
        }
    }
    return os.str();
}
}  // namespace detail

namespace detail {

/// The loss of a batch: a MultiTaskLoss against the labels; a DistillationLoss against the labels
/// and the teacher's predictions of the batch.
template <class T, class Source>
T batch_loss(MultiTaskLoss<T>& loss, const std::vector<ConstView<T>>& out, const Source& source) {
    return loss.forward(out, source.labels(), source.mask());
}
template <class T, class Source>
T batch_loss(DistillationLoss<T>& loss, const std::vector<ConstView<T>>& out, const Source& source) {
    return loss.forward(out, source.labels(), source.teacher(), source.mask());
}

/// A batch's loss as the source agrees on it: a source that trains with others (data-parallel
/// training) may turn it non-finite or throw when another process's is not finite, so that all
/// stop at the same step; the others return it unchanged.
template <class Source, class T>
auto agreed_loss(Source& source, T total, int) -> decltype(source.agree_on_loss(total)) {
    return source.agree_on_loss(total);
}
template <class Source, class T>
T agreed_loss(Source&, T total, long) {
    return total;
}

/// Where the sources of fit() take a teacher's predictions from when distilling: a column of the
/// data (offline: T x N) or a teacher model run on each batch (online); neither without
/// distillation. Gathered per batch into T x n.
template <class T, class Input>
struct BatchTeacher {
    const Matrix<T>* column = nullptr;
    /// The teacher model's predictions (evaluation semantics) of a batch and its surfaces.
    std::function<const std::vector<ConstView<T>>&(const Input&, const SurfaceIds&)> model;
    Matrix<T> batch;

    void gather(const Index* samples, Index n, const Input& input, const SurfaceIds& surfaces) {
        if (column) {
            if (batch.rows() != column->rows() || batch.cols() < n) batch.resize(column->rows(), n);
            for (Index j = 0; j < n; ++j) batch.col(j) = column->col(samples[j]);
        } else if (model) {
            const auto& p = model(input, surfaces);
            if (batch.rows() != Index(p.size()) || batch.cols() < n) batch.resize(Index(p.size()), n);
            for (std::size_t t = 0; t < p.size(); ++t) batch.row(Index(t)).head(n) = p[t].row(0);
        }
    }
    ConstView<T> view(Index n) const { return ConstView<T>(batch.data(), batch.rows(), n, batch.rows()); }
};

/// Checks a teacher-prediction column (T x N) against the tasks before training: finite, and a
/// probability in [0, 1] for binary tasks. Errors name the data set, the task and the sample.
template <class T>
void check_teacher_column(const Matrix<T>& teacher, const std::vector<TaskSpec>& tasks, Index n, const std::string& who) {
    require(teacher.size() != 0, who, ": distillation from the data needs its teacher predictions (teacher: ", tasks.size(),
            " x ", n, "), but it holds none");
    check_shape(teacher, Index(tasks.size()), n, who, "check", "teacher");
    for (Index t = 0; t < teacher.rows(); ++t)
        for (Index j = 0; j < n; ++j) {
            const T p = teacher(t, j);
            const bool binary = tasks[std::size_t(t)].kind == TaskKind::binary;
            require(std::isfinite(double(p)) && (!binary || (p >= T(0) && p <= T(1))), who, ": teacher prediction of task '",
                    tasks[std::size_t(t)].name, "' at sample ", j, " is ", p,
                    binary ? ", expected a probability in [0, 1]" : ", expected a finite value");
        }
}

/// The loop of fit(), shared by plain models and FeatureModel, and by every loss (MultiTaskLoss,
/// DistillationLoss: see batch_loss). `source` owns the batches and the model's forward and backward:
///   Index size();                                   the training samples
///   outputs forward(const Index* samples, Index n); gathers the samples, training forward
///   ConstView<T> labels(), mask(), teacher();       of the gathered batch (mask may be empty)
///   void backward(const outputs& d);                backward of the last forward
///   bool extra_grads_finite();                      gradients outside params() (the tables)
///   void step_extra(double lr_factor);              their optimizer step, lr scaled by the schedule
///   std::vector<TaskMetrics> validate();            metrics on the validation data (or empty)
///   bool has_validation();
template <class M, class Loss, class Source>
FitHistory fit_loop(M& model, Loss& loss, Source& source, const FitOptions& o) {
    using T = typename M::Scalar;
    const StreamStateGuard stream_guard(o.out);
    Progress progress = o.progress;
    if (progress == Progress::automatic)
        progress = (o.out == &std::cout && isatty(fileno(stdout))) ? Progress::bar : Progress::lines;
    if (!o.out) progress = Progress::silent;

    Adam<T> adam(adam_options(o));
    AdamOptions loss_ao;
    loss_ao.lr = o.lr;
    Adam<T> loss_adam(loss_ao);
    const bool learned_weights = loss.log_variances().size() > 0;
    const CosineAnnealingLR cosine(o.lr, double(o.epochs), o.min_lr);
    const Index n = source.size(), n_tasks = static_cast<Index>(model.tasks().size());
    const Index batches = (n + o.batch_size - 1) / o.batch_size;
    std::vector<Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Index(0));
    Rng rng(o.seed);
    FitHistory history;

    for (int epoch = 1; epoch <= o.epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        const double lr = o.cosine_lr ? cosine(epoch - 1) : o.lr;
        adam.set_lr(lr);
        loss_adam.set_lr(lr);
        loss.set_epoch(epoch - 1);
        moe::shuffle(order.begin(), order.end(), rng);
        model.train();
        EpochReport rep;
        rep.epoch = epoch;
        rep.lr = lr;
        rep.train_task_losses.assign(static_cast<std::size_t>(n_tasks), 0.0);
        Index counted_batches = 0;
        for (Index b = 0; b < batches; ++b) {
            const Index begin = b * o.batch_size, size = std::min(o.batch_size, n - begin);
            if (size < 2) continue;
            model.zero_grad();
            loss.zero_grad();
            const auto& out = source.forward(order.data() + begin, size);
            const T total = agreed_loss(source, batch_loss(loss, out, source), 0);
            if (!std::isfinite(static_cast<double>(total))) {
                std::size_t bad = 0;
                while (bad + 1 < loss.task_losses().size() && std::isfinite(double(loss.task_loss(bad)))) ++bad;
                throw numeric_error(concat("moe::fit: non-finite loss at epoch ", epoch, ", batch ", b + 1, " of ", batches,
                                           ", task '", model.tasks()[bad].name, "' (loss ", loss.task_loss(bad),
                                           "); stopped before the step, the parameters are those of the last good step"));
            }
            source.backward(loss.backward());
            const double norm = o.clip_norm > 0 ? double(clip_grad_norm(model.params(), o.clip_norm))
                                                : double(model.params().grads().norm());
            if (!std::isfinite(norm) || !loss.log_variance_grads().allFinite() || !source.extra_grads_finite())
                throw numeric_error(concat("moe::fit: non-finite gradient at epoch ", epoch, ", batch ", b + 1, " of ", batches,
                                           " (loss ", total, ", finite); stopped before the step, the parameters are "
                                           "those of the last good step"));
            adam.step(model.params());
            source.step_extra(lr / o.lr);
            if (learned_weights) loss_adam.step(loss.log_variances(), loss.log_variance_grads());
            rep.train_loss += double(total);
            for (Index t = 0; t < n_tasks; ++t)
                rep.train_task_losses[static_cast<std::size_t>(t)] += double(loss.task_loss(static_cast<std::size_t>(t)));
            ++counted_batches;
            if (progress == Progress::bar) {
                const int width = 30, done = static_cast<int>(width * (b + 1) / batches);
                *o.out << "\repoch " << epoch << "/" << o.epochs << " [" << std::string(std::size_t(done), '=')
                       << std::string(std::size_t(width - done), ' ') << "] " << std::setw(3) << (100 * (b + 1) / batches)
                       << "% loss " << std::fixed << std::setprecision(4) << rep.train_loss / double(counted_batches)
                       << std::flush;
            }
        }
        if (counted_batches) {
            rep.train_loss /= double(counted_batches);
            for (auto& l : rep.train_task_losses) l /= double(counted_batches);
        }
        for (std::size_t t = 0; t < loss.tasks().size(); ++t) rep.task_weights.push_back(double(loss.effective_weight(t)));
        model.eval();
        rep.validation = source.validate();
        rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (progress != Progress::silent) {
            if (progress == Progress::bar) *o.out << "\r\033[K";
            *o.out << "epoch " << epoch << "/" << o.epochs << "  loss " << std::fixed << std::setprecision(4)
                   << rep.train_loss;
            if (source.has_validation()) *o.out << "  valid: " << format_metrics(rep.validation);
            *o.out << "  lr " << std::scientific << std::setprecision(2) << lr << std::fixed << "  "
                   << std::setprecision(1) << rep.seconds << "s\n";
        }
        history.epochs.push_back(rep);
        if (o.on_epoch && !o.on_epoch(history.epochs.back())) {
            history.stopped_by_callback = true;
            break;
        }
    }
    model.eval();
    return history;
}

/// fit()'s batches of a MultiTaskData: columns copied into buffers of batch_size columns.
template <class M>
class DenseFitSource {
public:
    using T = typename M::Scalar;
    DenseFitSource(Model<M>& model, const MultiTaskData<T>& train, const MultiTaskData<T>* valid, Index batch_size)
        : model_(model),
          train_(train),
          valid_(valid),
          xb_(train.x.rows(), batch_size),
          yb_(Index(model.tasks().size()), batch_size),
          mb_(train.mask.size() ? yb_.rows() : 0, batch_size),
          sb_(train.surfaces.empty() ? 0 : std::size_t(batch_size)) {}

    /// Distillation: the teacher's predictions of each batch.
    BatchTeacher<T, ConstView<T>>& teacher_source() { return teacher_; }

    Index size() const { return train_.size(); }
    const std::vector<ConstView<T>>& forward(const Index* samples, Index n) {
        for (Index j = 0; j < n; ++j) {
            xb_.col(j) = train_.x.col(samples[j]);
            yb_.col(j) = train_.labels.col(samples[j]);
            if (mb_.rows()) mb_.col(j) = train_.mask.col(samples[j]);
            if (!sb_.empty()) sb_[std::size_t(j)] = train_.surfaces[std::size_t(samples[j])];
        }
        n_ = n;
        const ConstView<T> x(xb_.data(), xb_.rows(), n);
        const SurfaceIds surfaces = sb_.empty() ? SurfaceIds() : SurfaceIds(sb_.data(), n);
        teacher_.gather(samples, n, x, surfaces);
        return model_.forward(x, surfaces);
    }
    ConstView<T> labels() const { return ConstView<T>(yb_.data(), yb_.rows(), n_); }
    ConstView<T> teacher() const { return teacher_.view(n_); }
    ConstView<T> mask() const { return mb_.rows() ? ConstView<T>(mb_.data(), mb_.rows(), n_) : ConstView<T>(); }
    void backward(const std::vector<ConstView<T>>& d) { model_.backward(d); }
    bool extra_grads_finite() const { return true; }
    void step_extra(double) {}
    bool has_validation() const { return valid_ != nullptr; }
    std::vector<TaskMetrics> validate() const { return valid_ ? evaluate(model_, *valid_) : std::vector<TaskMetrics>{}; }

private:
    Model<M>& model_;
    const MultiTaskData<T>& train_;
    const MultiTaskData<T>* valid_;
    Matrix<T> xb_, yb_, mb_;
    std::vector<Index> sb_;  // the batch's surfaces (tower trees)
    BatchTeacher<T, ConstView<T>> teacher_;
    Index n_ = 0;
};

/// fit()'s checks of the loss against the model.
template <class Loss>
void check_fit_loss(const std::vector<TaskSpec>& model_tasks, const Loss& loss) {
    require(same_tasks(loss.tasks(), model_tasks), "moe::fit: the loss was built for the tasks [", describe_tasks(loss.tasks()),
            "], the model has [", describe_tasks(model_tasks), "] (same names, kinds and order needed)");
}

}  // namespace detail

namespace detail {
/// fit() of a plain model with any loss; `teacher` (when distilling) fills the source's teacher.
template <class M, class Loss, class SetTeacher>
FitHistory fit_dense(Model<M>& model, Loss& loss, const MultiTaskData<typename M::Scalar>& train,
                     const MultiTaskData<typename M::Scalar>* valid, const FitOptions& o, SetTeacher&& teacher) {
    // Everything is checked before the first step: a bad setting must not surface epochs later.
    check_fit_options(o);
    check_fit_loss(model.tasks(), loss);
    train.check(model.in_features(), model.tasks(), "train", model.surfaces());
    require(train.size() >= 2, "moe::fit: the training set has ", train.size(),
            " sample; a step needs at least 2 (BatchNorm cannot train on one)");
    check_surfaces_trained(train.surfaces, model.surfaces(), "moe::fit");
    if (valid) valid->check(model.in_features(), model.tasks(), "validation", model.surfaces());
    DenseFitSource<M> source(model, train, valid, o.batch_size);
    teacher(source.teacher_source());
    return fit_loop(model, loss, source, o);
}

/// The checks of an online teacher: a model of the student's tasks and surfaces and input width.
template <class Student, class Teacher>
void check_teacher_model(const Student& student, const Teacher& teacher) {
    require(same_tasks(student.tasks(), teacher.tasks()), "moe::fit: the teacher's tasks are [", describe_tasks(teacher.tasks()),
            "], the student's [", describe_tasks(student.tasks()), "] (same names, kinds and order needed)");
    require(teacher.surfaces() == 1 || teacher.surfaces() == student.surfaces(), "moe::fit: the teacher has ", teacher.surfaces(),
            " surfaces, the student ", student.surfaces(), " (a teacher of surfaces needs the student's)");
}
}  // namespace detail

/// Trains model on train (and evaluates on valid when given, which may be null) with Adam.
/// Batches are the columns of a seeded permutation per epoch; a last batch of one sample is skipped
/// (BatchNorm needs two). A non-finite loss or gradient stops training with numeric_error naming
/// the epoch, the batch and the task; no optimizer step is taken with it, so the parameters are those
/// of the last good step. The model is left in evaluation mode. The loss's weight schedule moves to
/// each epoch (set_epoch(epoch - 1)); under uncertainty weighting its log-variances are trained by
/// a second Adam with the same learning rate and no weight decay. A tower tree (surfaces > 1) needs
/// the data's surface column, and every surface among the training samples.
template <class M>
FitHistory fit(Model<M>& model, MultiTaskLoss<typename M::Scalar>& loss, const MultiTaskData<typename M::Scalar>& train,
               const MultiTaskData<typename M::Scalar>* valid, const FitOptions& o) {
    return detail::fit_dense(model, loss, train, valid, o, [](auto&) {});
}

/// Knowledge distillation from a teacher's predictions stored in the data (offline): train.teacher
/// (T x N, probabilities for binary tasks) is checked before the first step. Otherwise as fit().
template <class M>
FitHistory fit(Model<M>& model, DistillationLoss<typename M::Scalar>& loss, const MultiTaskData<typename M::Scalar>& train,
               const MultiTaskData<typename M::Scalar>* valid, const FitOptions& o) {
    detail::check_teacher_column(train.teacher, model.tasks(), train.size(), "moe::MultiTaskData(train)");
    return detail::fit_dense(model, loss, train, valid, o, [&](auto& t) { t.column = &train.teacher; });
}

/// Knowledge distillation from a teacher model in memory (online): every batch is predicted by
/// `teacher` (evaluation semantics: its predict, calibrated if it holds a calibration) and the
/// student learns from those predictions. The teacher must have the student's tasks.
template <class M, class TM>
FitHistory fit(Model<M>& model, DistillationLoss<typename M::Scalar>& loss, const Model<TM>& teacher,
               const MultiTaskData<typename M::Scalar>& train, const MultiTaskData<typename M::Scalar>* valid, const FitOptions& o) {
    using T = typename M::Scalar;
    detail::check_teacher_model(model, teacher);
    InferenceWorkspace<T> ws;
    return detail::fit_dense(model, loss, train, valid, o, [&](auto& t) {
        t.model = [&teacher, &ws](const ConstView<T>& x, const SurfaceIds& s) -> const std::vector<ConstView<T>>& {
            return teacher.surfaces() == 1 ? teacher.predict(x, ws) : teacher.predict(x, ws, s);
        };
    });
}

}  // namespace moe
