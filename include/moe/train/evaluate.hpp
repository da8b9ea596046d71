#pragma once
// Metrics of a model on a data set, per task.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "moe/models/towers.hpp"
#include "moe/tasks/metrics.hpp"
#include "moe/train/dataset.hpp"

namespace moe {

/// Metrics of one task over the counted samples. Binary: auc (nullopt with one class only),
/// logloss, accuracy. Regression: rmse. Multiclass: accuracy and logloss (mean cross-entropy).
/// Metrics that do not apply are NaN.
struct TaskMetrics {
    std::string task;
    TaskKind kind = TaskKind::binary;
    Index count = 0;
    std::optional<double> auc;
    double logloss = std::numeric_limits<double>::quiet_NaN();
    double rmse = std::numeric_limits<double>::quiet_NaN();
    double accuracy = std::numeric_limits<double>::quiet_NaN();
};

/// Predictions of every task over the whole data set (task t: outputs_t x N), in batches; a tower
/// tree needs each sample's surface.
template <class M, class T = typename M::Scalar>
std::vector<Matrix<T>> predict_all(const M& model, const Matrix<T>& x, Index batch_size = 4096,
                                   const SurfaceIds& surfaces = {}) {
    detail::require(batch_size > 0, "moe::predict_all: batch_size must be positive, got ", batch_size);
    std::vector<Matrix<T>> out;
    for (const auto& t : model.tasks()) out.emplace_back(t.outputs(), x.cols());
    surfaces.check(x.cols(), model.surfaces(), "moe::predict_all");
    InferenceWorkspace<T> ws;
    for (Index begin = 0; begin < x.cols(); begin += batch_size) {
        const Index n = std::min(batch_size, x.cols() - begin);
        const auto& pred =
            model.predict(ConstView<T>(x.data() + begin * x.rows(), x.rows(), n), ws, surfaces.block(begin, n));
        for (std::size_t t = 0; t < out.size(); ++t) out[t].middleCols(begin, n) = pred[t];
    }
    return out;
}

namespace detail {
/// Per-task metrics of predictions (task t: outputs_t x N) against labels (T x N) and mask (T x N
/// or empty).
template <class T>
std::vector<TaskMetrics> task_metrics(const std::vector<TaskSpec>& tasks, const std::vector<Matrix<T>>& preds,
                                      const Matrix<T>& labels, const Matrix<T>& mask) {
    std::vector<TaskMetrics> result;
    for (std::size_t t = 0; t < preds.size(); ++t) {
        const TaskSpec& task = tasks[t];
        const auto ti = static_cast<Index>(t);
        const Matrix<T> y = labels.row(ti);
        const Matrix<T> m = mask.size() ? Matrix<T>(mask.row(ti)) : Matrix<T>();
        TaskMetrics r;
        r.task = task.name;
        r.kind = task.kind;
        for (Index j = 0; j < y.cols(); ++j) r.count += m.size() == 0 || m(0, j) != T(0);
        switch (task.kind) {
            case TaskKind::binary:
                r.auc = auc<T>(preds[t], y, m);
                r.logloss = logloss<T>(preds[t], y, m);
                r.accuracy = accuracy<T>(preds[t], y, m);
                break;
            case TaskKind::regression: r.rmse = rmse<T>(preds[t], y, m); break;
            case TaskKind::multiclass:
                r.accuracy = accuracy<T>(preds[t], y, m);
                r.logloss = multiclass_logloss<T>(preds[t], y, m);
                break;
        }
        result.push_back(std::move(r));
    }
    return result;
}
}  // namespace detail

/// Per-task metrics of the model on data (inference path).
template <class M, class T = typename M::Scalar>
std::vector<TaskMetrics> evaluate(const M& model, const MultiTaskData<T>& data, Index batch_size = 4096) {
    data.check(model.in_features(), model.tasks(), "evaluate", model.surfaces());
    return detail::task_metrics(model.tasks(),
                                predict_all(model, data.x, batch_size, detail::surface_ids(data.surfaces)), data.labels,
                                data.mask);
}

}  // namespace moe
