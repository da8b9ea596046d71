#pragma once
// Calibration of a multi-task model per surface and task: a Platt or isotonic calibrator for every
// binary task on every surface, fitted on held-out predictions after training, applied to
// predictions (FeatureModel::predict applies the one it holds), and the measures of it per surface
// and task (expected calibration error, calibration ratio, reliability curve).
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/view.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/task.hpp"
#include "moe/tasks/calibration.hpp"

namespace moe {

enum class CalibrationMethod { none, platt, isotonic };

inline const char* to_string(CalibrationMethod m) {
    switch (m) {
        case CalibrationMethod::none: return "none";
        case CalibrationMethod::platt: return "platt";
        case CalibrationMethod::isotonic: return "isotonic";
    }
    return "?";
}

/// One task's calibrator on one surface: a predicted probability in, a calibrated one out. Platt
/// scaling works on the prediction's logit (the tower's output), isotonic regression on the
/// probability itself; `none` passes it through.
struct Calibrator {
    CalibrationMethod method = CalibrationMethod::none;
    PlattScaling platt;
    IsotonicRegression isotonic;

    /// The logit Platt scaling sees: log(p / (1 - p)), p clamped to [1e-15, 1 - 1e-15] so that
    /// a saturated prediction gives a finite score.
    static double logit(double p) {
        const double q = std::min(std::max(p, 1e-15), 1.0 - 1e-15);
        return std::log(q / (1.0 - q));
    }
    double operator()(double p) const {
        switch (method) {
            case CalibrationMethod::platt: return platt(logit(p));
            case CalibrationMethod::isotonic: return isotonic(p);
            case CalibrationMethod::none: break;
        }
        return p;
    }
};

/// The measures of one task on one surface: held-out samples counted (labelled), ECE over `bins`
/// bins, calibration ratio (sum of predictions / sum of labels; NaN without positives).
struct SurfaceCalibrationMetrics {
    Index surface = 0;
    std::string task;
    Index count = 0;
    double ece = 0, ratio = 0;
};

namespace detail {
/// The labelled samples of binary task t on surface s: predictions and labels as vectors.
template <class T>
void surface_task_samples(const std::vector<Matrix<T>>& preds, const Matrix<T>& labels, const Matrix<T>& mask,
                          const std::vector<Index>& surfaces, std::size_t t, Index s, std::vector<double>& p,
                          std::vector<double>& y) {
    p.clear();
    y.clear();
    const auto ti = Index(t);
    for (Index j = 0; j < labels.cols(); ++j) {
        if ((surfaces.empty() ? 0 : surfaces[std::size_t(j)]) != s) continue;
        if (mask.size() != 0 && mask(ti, j) == T(0)) continue;
        p.push_back(double(preds[t](0, j)));
        y.push_back(double(labels(ti, j)));
    }
}

/// Checks held-out predictions (task t: outputs_t x N), labels and mask (T x N, mask may be empty)
/// and the surface column (N ids in [0, surfaces) or empty) against the tasks.
template <class T>
void check_heldout(const std::vector<TaskSpec>& tasks, Index surfaces, const std::vector<Matrix<T>>& preds,
                   const Matrix<T>& labels, const Matrix<T>& mask, const std::vector<Index>& surface_ids, const char* who) {
    require(preds.size() == tasks.size(), who, ": predictions of ", preds.size(), " tasks, the model has ", tasks.size());
    const Index n = labels.cols(), n_tasks = Index(tasks.size());
    check_shape(labels, n_tasks, n, who, "labels", "labels");
    if (mask.size() != 0) check_shape(mask, n_tasks, n, who, "mask", "mask");
    for (std::size_t t = 0; t < tasks.size(); ++t) check_shape(preds[t], tasks[t].outputs(), n, who, "predictions", tasks[t].name.c_str());
    check_surface_column(surface_ids, n, surfaces, who);
}
}  // namespace detail

/// A calibrator per surface and task of a multi-task model (S surfaces, T tasks). Only binary tasks
/// are calibrated; regression and multiclass tasks always pass through. Empty (no surfaces, no
/// tasks) when default-constructed: applies nothing.
class Calibration {
public:
    Calibration() = default;
    Calibration(Index surfaces, std::vector<TaskSpec> tasks) : surfaces_(surfaces), tasks_(std::move(tasks)) {
        detail::require(surfaces >= 1, "moe::Calibration: surfaces must be at least 1, got ", surfaces);
        detail::check_tasks(tasks_, "moe::Calibration");
        calibrators_.resize(std::size_t(surfaces) * tasks_.size());
    }

    bool empty() const { return calibrators_.empty(); }
    Index surfaces() const { return surfaces_; }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }

    /// The calibrator of task t on surface s.
    Calibrator& at(Index surface, std::size_t task) { return calibrators_.at(index(surface, task)); }
    const Calibrator& at(Index surface, std::size_t task) const { return calibrators_.at(index(surface, task)); }

    /// Fits `method` for every binary task on every surface from held-out predictions after the
    /// heads (task t: outputs_t x N, as predict gives them, uncalibrated), labels and mask (T x N;
    /// mask may be empty) and each sample's surface (N ids, or empty for a model of one surface).
    /// Each (surface, binary task) needs labelled samples of both classes: config_error naming the
    /// surface and the task otherwise.
    template <class T>
    static Calibration fit(const std::vector<TaskSpec>& tasks, Index surfaces, const std::vector<Matrix<T>>& preds,
                           const Matrix<T>& labels, const Matrix<T>& mask, const std::vector<Index>& surface_ids,
                           CalibrationMethod method) {
        const char* who = "moe::Calibration::fit";
        Calibration c(surfaces, tasks);
        detail::check_heldout(tasks, surfaces, preds, labels, mask, surface_ids, who);
        if (method == CalibrationMethod::none) return c;
        std::vector<double> p, y;
        for (std::size_t t = 0; t < tasks.size(); ++t) {
            if (tasks[t].kind != TaskKind::binary) continue;
            for (Index s = 0; s < surfaces; ++s) {
                detail::surface_task_samples(preds, labels, mask, surface_ids, t, s, p, y);
                const std::string what = detail::concat(who, ": task '", tasks[t].name, "' on surface ", s);
                detail::require(!p.empty(), what, " has no labelled held-out samples");
                Calibrator& cal = c.at(s, t);
                try {
                    detail::check_probabilities(p, y, what.c_str());
                    cal.method = method;
                    if (method == CalibrationMethod::platt) {
                        for (double& v : p) v = Calibrator::logit(v);
                        cal.platt = PlattScaling::fit(p, y);
                    } else {
                        cal.isotonic = IsotonicRegression::fit(p, y);
                    }
                } catch (const config_error& e) {
                    throw config_error(what + ": " + e.what());
                }
            }
        }
        return c;
    }

    /// Calibrated predictions: out[t] = raw[t] with task t's calibrator of each sample's surface
    /// applied (binary tasks; the others copied). raw as predict gives them (task t: outputs_t x B).
    /// `out`'s buffers are reused; views (one per task) point into them.
    template <class T>
    void apply(const std::vector<ConstView<T>>& raw, const SurfaceIds& surfaces, std::vector<Buffer<T>>& out,
               std::vector<ConstView<T>>& views) const {
        detail::require(raw.size() == tasks_.size(), "moe::Calibration::apply: predictions of ", raw.size(), " tasks, calibrated for ",
                        tasks_.size());
        const Index n = raw.empty() ? 0 : raw[0].cols();
        surfaces.check(n, surfaces_, "moe::Calibration::apply");
        out.resize(raw.size());
        views.resize(raw.size());
        for (std::size_t t = 0; t < raw.size(); ++t) {
            auto& o = out[t].resize(raw[t].rows(), raw[t].cols());
            o = raw[t];
            if (tasks_[t].kind == TaskKind::binary)
                for (Index j = 0; j < n; ++j) {
                    const Calibrator& c = at(surfaces[j], t);
                    if (c.method != CalibrationMethod::none) o(0, j) = T(c(double(o(0, j))));
                }
            views[t] = o;
        }
    }

    /// Checks that this calibration fits a model of `surfaces` surfaces and these tasks (names,
    /// kinds and order); `who` names the caller.
    void check_fits(Index surfaces, const std::vector<TaskSpec>& tasks, const std::string& who) const {
        detail::require(surfaces_ == surfaces, who, ": the calibration is for ", surfaces_, " surfaces, the model has ", surfaces);
        detail::require(detail::same_tasks(tasks_, tasks), who, ": the calibration is for the tasks [", detail::describe_tasks(tasks_),
                        "], the model has [", detail::describe_tasks(tasks), "]");
    }

private:
    std::size_t index(Index surface, std::size_t task) const {
        detail::require(surface >= 0 && surface < surfaces_ && task < tasks_.size(), "moe::Calibration: no calibrator for surface ",
                        surface, " and task ", task, " (", surfaces_, " surfaces, ", tasks_.size(), " tasks)");
        return std::size_t(surface) * tasks_.size() + task;
    }

    Index surfaces_ = 0;
    std::vector<TaskSpec> tasks_;
    std::vector<Calibrator> calibrators_;  // surface-major
};

/// ECE (`bins` equal-width bins) and calibration ratio of every binary task on every surface, from
/// predictions after the heads (task t: outputs_t x N), labels, mask (may be empty) and surfaces (N
/// ids or empty). A surface without labelled samples of a task is reported with count 0 and NaN.
template <class T>
std::vector<SurfaceCalibrationMetrics> surface_calibration_metrics(const std::vector<TaskSpec>& tasks, Index surfaces,
                                                                   const std::vector<Matrix<T>>& preds, const Matrix<T>& labels,
                                                                   const Matrix<T>& mask, const std::vector<Index>& surface_ids,
                                                                   Index bins = 10) {
    detail::check_heldout(tasks, surfaces, preds, labels, mask, surface_ids, "moe::surface_calibration_metrics");
    std::vector<SurfaceCalibrationMetrics> out;
    std::vector<double> p, y;
    for (Index s = 0; s < surfaces; ++s)
        for (std::size_t t = 0; t < tasks.size(); ++t) {
            if (tasks[t].kind != TaskKind::binary) continue;
            detail::surface_task_samples(preds, labels, mask, surface_ids, t, s, p, y);
            SurfaceCalibrationMetrics m;
            m.surface = s;
            m.task = tasks[t].name;
            m.count = Index(p.size());
            m.ece = m.ratio = std::nan("");
            if (!p.empty()) {
                m.ece = expected_calibration_error(p, y, bins);
                m.ratio = calibration_ratio(p, y);
            }
            out.push_back(m);
        }
    return out;
}

}  // namespace moe
