#pragma once
// fit, evaluate and predict_all for a FeatureModel on a FeatureData: the training loop of plain
// models (moe/train/fit.hpp), with batches gathered from the bags and the tables stepped by a
// TableOptimizer next to Adam on the dense parameters.
#include <algorithm>
#include <numeric>
#include <vector>

#include "moe/features/feature_data.hpp"
#include "moe/features/feature_model.hpp"
#include "moe/features/table_optimizer.hpp"
#include "moe/train/fit.hpp"

namespace moe {

/// Predictions of every task over all samples of `all` (task t: outputs_t x N), in batches; a
/// tower tree needs each sample's surface. Calibrated when the model holds a calibration, unless
/// `calibrated` is false.
template <class Net, class T = typename Net::Scalar>
std::vector<Matrix<T>> predict_all(const FeatureModel<Net>& model, const FeatureBatch<T>& all, Index batch_size = 4096,
                                   const SurfaceIds& surfaces = {}, bool calibrated = true) {
    detail::require(batch_size > 0, "moe::predict_all: batch_size must be positive, got ", batch_size);
    const Index n = model.input().check(all);
    surfaces.check(n, model.surfaces(), "moe::predict_all");
    std::vector<Matrix<T>> out;
    for (const auto& t : model.tasks()) out.emplace_back(t.outputs(), n);
    std::vector<Index> samples(std::size_t(std::min(batch_size, n)));
    FeatureBatch<T> batch;
    FeatureWorkspace<T> ws;
    for (Index begin = 0; begin < n; begin += batch_size) {
        const Index size = std::min(batch_size, n - begin);
        std::iota(samples.begin(), samples.begin() + size, begin);
        gather_samples(all, samples.data(), size, batch);
        const auto& pred = model.predict(batch, ws, surfaces.block(begin, size), calibrated);
        for (std::size_t t = 0; t < out.size(); ++t) out[t].middleCols(begin, size) = pred[t];
    }
    return out;
}

/// Per-task metrics of the model on data (inference path); data is checked first.
template <class Net, class T = typename Net::Scalar>
std::vector<TaskMetrics> evaluate(const FeatureModel<Net>& model, const FeatureData<T>& data, Index batch_size = 4096) {
    data.check(model.input(), model.tasks(), "evaluate", model.surfaces());
    return detail::task_metrics(model.tasks(),
                                predict_all(model, data.features, batch_size, detail::surface_ids(data.surfaces)),
                                data.labels, data.mask);
}

/// Fits a calibration of the model (per surface and binary task, see Calibration::fit) on held-out
/// data, from the model's uncalibrated predictions; set it with model.set_calibration.
template <class Net, class T = typename Net::Scalar>
Calibration fit_calibration(const FeatureModel<Net>& model, const FeatureData<T>& heldout, CalibrationMethod method) {
    heldout.check(model.input(), model.tasks(), "calibration", model.surfaces());
    const auto preds = predict_all(model, heldout.features, 4096, detail::surface_ids(heldout.surfaces), false);
    return Calibration::fit(model.tasks(), model.surfaces(), preds, heldout.labels, heldout.mask, heldout.surfaces, method);
}

/// ECE (`bins` bins) and calibration ratio of every binary task on every surface of `data`, from
/// the model's predictions (calibrated when it holds a calibration, unless `calibrated` is false).
template <class Net, class T = typename Net::Scalar>
std::vector<SurfaceCalibrationMetrics> calibration_metrics(const FeatureModel<Net>& model, const FeatureData<T>& data,
                                                           Index bins = 10, bool calibrated = true) {
    data.check(model.input(), model.tasks(), "calibration_metrics", model.surfaces());
    const auto preds = predict_all(model, data.features, 4096, detail::surface_ids(data.surfaces), calibrated);
    return surface_calibration_metrics(model.tasks(), model.surfaces(), preds, data.labels, data.mask, data.surfaces, bins);
}

namespace detail {

/// fit()'s batches of a FeatureData, and the optimizer steps outside the net's parameters: the
/// tables' and (with attention features) Adam on the input's attention parameters, with fit's
/// Adam settings.
template <class Net, class Opt>
class FeatureFitSource {
public:
    using T = typename Net::Scalar;
    FeatureFitSource(FeatureModel<Net>& model, const FeatureData<T>& train, const FeatureData<T>* valid,
                     TableOptimizer<T, Opt>& tables, const FitOptions& o)
        : model_(model),
          train_(train),
          valid_(valid),
          tables_(tables),
          base_lr_(tables.options().lr),
          attention_adam_(adam_options(o)),
          attention_lr_(o.lr),
          yb_(Index(model.tasks().size()), o.batch_size),
          mb_(train.mask.size() ? yb_.rows() : 0, o.batch_size),
          sb_(train.surfaces.empty() ? 0 : std::size_t(o.batch_size)) {}

    /// Distillation: the teacher's predictions of each batch.
    BatchTeacher<T, FeatureBatch<T>>& teacher_source() { return teacher_; }

    Index size() const { return train_.size(); }
    const std::vector<ConstView<T>>& forward(const Index* samples, Index n) {
        gather_samples(train_.features, samples, n, batch_);
        for (Index j = 0; j < n; ++j) {
            yb_.col(j) = train_.labels.col(samples[j]);
            if (mb_.rows()) mb_.col(j) = train_.mask.col(samples[j]);
            if (!sb_.empty()) sb_[std::size_t(j)] = train_.surfaces[std::size_t(samples[j])];
        }
        n_ = n;
        const SurfaceIds surfaces = sb_.empty() ? SurfaceIds() : SurfaceIds(sb_.data(), n);
        teacher_.gather(samples, n, batch_, surfaces);
        return model_.forward(batch_, surfaces);
    }
    ConstView<T> labels() const { return ConstView<T>(yb_.data(), yb_.rows(), n_); }
    ConstView<T> teacher() const { return teacher_.view(n_); }
    ConstView<T> mask() const { return mb_.rows() ? ConstView<T>(mb_.data(), mb_.rows(), n_) : ConstView<T>(); }
    void backward(const std::vector<ConstView<T>>& d) { model_.backward(d); }
    bool extra_grads_finite() const {
        for (Index t = 0; t < model_.input().tables(); ++t)
            if (!model_.input().grad(t).values.view().allFinite()) return false;
        return model_.input().attention_params().grads().allFinite();
    }
    /// The tables follow the dense learning rate's schedule: their own lr times its factor; the
    /// attention parameters the dense lr itself.
    void step_extra(double lr_factor) {
        tables_.set_lr(base_lr_ * lr_factor);
        tables_.step(model_.input());
        ParameterStore<T>& attention = model_.input().attention_params();
        if (attention.size() == 0) return;
        attention_adam_.set_lr(attention_lr_ * lr_factor);
        attention_adam_.step(attention);
    }
    bool has_validation() const { return valid_ != nullptr; }
    std::vector<TaskMetrics> validate() const { return valid_ ? evaluate(model_, *valid_) : std::vector<TaskMetrics>{}; }
    /// The tables' lr as it was before fit.
    void restore_lr() { tables_.set_lr(base_lr_); }

private:
    FeatureModel<Net>& model_;
    const FeatureData<T>& train_;
    const FeatureData<T>* valid_;
    TableOptimizer<T, Opt>& tables_;
    double base_lr_;
    Adam<T> attention_adam_;
    double attention_lr_;
    FeatureBatch<T> batch_;
    Matrix<T> yb_, mb_;
    std::vector<Index> sb_;  // the batch's surfaces (tower trees)
    BatchTeacher<T, FeatureBatch<T>> teacher_;
    Index n_ = 0;
};

}  // namespace detail

namespace detail {
/// fit() of a FeatureModel with any loss; `teacher` (when distilling) fills the source's teacher.
template <class Net, class Opt, class Loss, class SetTeacher>
FitHistory fit_features(FeatureModel<Net>& model, TableOptimizer<typename Net::Scalar, Opt>& tables, Loss& loss,
                        const FeatureData<typename Net::Scalar>& train, const FeatureData<typename Net::Scalar>* valid,
                        const FitOptions& o, SetTeacher&& teacher) {
    check_fit_options(o);
    check_fit_loss(model.tasks(), loss);
    require(tables.tables() == model.input().tables(), "moe::fit: the table optimizer has ", tables.tables(),
            " tables, the model's input ", model.input().tables());
    for (Index t = 0; t < tables.tables(); ++t) {
        const auto& table = model.input().table(t);
        require(tables.table_optimizer(t).rows() == table.cols() && tables.table_optimizer(t).dim() == table.rows(),
                "moe::fit: the table optimizer's table ", t, " is ", tables.table_optimizer(t).dim(), " x ",
                tables.table_optimizer(t).rows(), ", the model's '", model.input().spec().tables[std::size_t(t)].name, "' is ",
                table.rows(), " x ", table.cols());
    }
    train.check(model.input(), model.tasks(), "train", model.surfaces());
    require(train.size() >= 2, "moe::fit: the training set has ", train.size(),
            " sample; a step needs at least 2 (BatchNorm cannot train on one)");
    check_surfaces_trained(train.surfaces, model.surfaces(), "moe::fit");
    if (valid) valid->check(model.input(), model.tasks(), "validation", model.surfaces());
    FeatureFitSource<Net, Opt> source(model, train, valid, tables, o);
    teacher(source.teacher_source());
    try {
        FitHistory h = fit_loop(model, loss, source, o);
        source.restore_lr();
        return h;
    } catch (...) {
        source.restore_lr();
        throw;
    }
}

/// SparseAdam on a model's tables at fit's lr: the table optimizer of the fit() overloads without one.
template <class Net>
TableOptimizer<typename Net::Scalar> fresh_tables(FeatureModel<Net>& model, const FitOptions& o) {
    check_fit_options(o);
    SparseAdamOptions so;
    so.lr = o.lr;
    return TableOptimizer<typename Net::Scalar>(model.input(), so);
}

/// The online teacher of a FeatureModel student: the teacher model's predict on each batch.
template <class T, class TeacherNet>
struct FeatureTeacher {
    const FeatureModel<TeacherNet>& teacher;
    FeatureWorkspace<T> ws;
    void operator()(BatchTeacher<T, FeatureBatch<T>>& t) {
        t.model = [this](const FeatureBatch<T>& b, const SurfaceIds& s) -> const std::vector<ConstView<T>>& {
            return teacher.surfaces() == 1 ? teacher.predict(b, ws) : teacher.predict(b, ws, s);
        };
    }
};
}  // namespace detail

/// Trains a FeatureModel as fit() trains a plain model (same options, checks, errors and
/// history), Adam on the dense parameters and `tables` on the embedding tables. The tables'
/// learning rate is their optimizer's own, scaled by the cosine schedule when it is on, and is as
/// before when fit returns; their state carries over between calls (save it with the model).
/// clip_norm clips the dense parameters' gradient only (the tables' rows are not clipped, as with
/// torchrec's fused table optimizers); a non-finite table gradient stops training as a dense one
/// does. A tower tree (surfaces > 1) needs the data's surface column, and every surface among the
/// training samples.
template <class Net, class Opt>
FitHistory fit(FeatureModel<Net>& model, TableOptimizer<typename Net::Scalar, Opt>& tables,
               MultiTaskLoss<typename Net::Scalar>& loss, const FeatureData<typename Net::Scalar>& train,
               const FeatureData<typename Net::Scalar>* valid, const FitOptions& o) {
    return detail::fit_features(model, tables, loss, train, valid, o, [](auto&) {});
}

/// fit() with SparseAdam on the tables at fit's lr (a fresh optimizer: its state is lost when fit
/// returns; pass a TableOptimizer to keep it).
template <class Net>
FitHistory fit(FeatureModel<Net>& model, MultiTaskLoss<typename Net::Scalar>& loss,
               const FeatureData<typename Net::Scalar>& train, const FeatureData<typename Net::Scalar>* valid,
               const FitOptions& o) {
    auto tables = detail::fresh_tables(model, o);
    return fit(model, tables, loss, train, valid, o);
}

/// Knowledge distillation from the teacher predictions in the data (offline): train.teacher (T x
/// N, after the heads: probabilities for binary tasks) is checked before the first step. Otherwise
/// as fit(); the tables by `tables`.
template <class Net, class Opt>
FitHistory fit(FeatureModel<Net>& model, TableOptimizer<typename Net::Scalar, Opt>& tables,
               DistillationLoss<typename Net::Scalar>& loss, const FeatureData<typename Net::Scalar>& train,
               const FeatureData<typename Net::Scalar>* valid, const FitOptions& o) {
    detail::check_teacher_column(train.teacher, model.tasks(), train.size(), "moe::FeatureData(train)");
    return detail::fit_features(model, tables, loss, train, valid, o, [&](auto& t) { t.column = &train.teacher; });
}

/// Offline distillation with SparseAdam on the tables at fit's lr.
template <class Net>
FitHistory fit(FeatureModel<Net>& model, DistillationLoss<typename Net::Scalar>& loss,
               const FeatureData<typename Net::Scalar>& train, const FeatureData<typename Net::Scalar>* valid,
               const FitOptions& o) {
    auto tables = detail::fresh_tables(model, o);
    return fit(model, tables, loss, train, valid, o);
}

/// Knowledge distillation from a teacher model in memory (online): each batch is predicted by
/// `teacher` (its predict: evaluation semantics, calibrated if it holds a calibration) and the
/// student learns from those predictions; the teacher must have the student's tasks, and either
/// one surface or the student's. SparseAdam on the student's tables at fit's lr.
template <class Net, class TeacherNet>
FitHistory fit(FeatureModel<Net>& model, DistillationLoss<typename Net::Scalar>& loss, const FeatureModel<TeacherNet>& teacher,
               const FeatureData<typename Net::Scalar>& train, const FeatureData<typename Net::Scalar>* valid,
               const FitOptions& o) {
    detail::check_teacher_model(model, teacher);
    auto tables = detail::fresh_tables(model, o);
    detail::FeatureTeacher<typename Net::Scalar, TeacherNet> source{teacher, {}};
    return detail::fit_features(model, tables, loss, train, valid, o, source);
}

}  // namespace moe
