#pragma once
// A multi-task data set in memory.
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/task.hpp"

namespace moe {

namespace detail {
/// Checks labels (T x N) and mask (T x N or empty) against the tasks: masks finite and >= 0, every
/// counted label valid for its task. Errors name `who`, the task and the sample. Shapes are the
/// caller's to check.
template <class T>
void check_labels(const Matrix<T>& labels, const Matrix<T>& mask, const std::vector<TaskSpec>& tasks, const std::string& who) {
    for (Index t = 0; t < Index(tasks.size()); ++t) {
        const TaskSpec& task = tasks[static_cast<std::size_t>(t)];
        for (Index j = 0; j < labels.cols(); ++j) {
            if (mask.size() != 0) {
                const T m = mask(t, j);
                require(std::isfinite(static_cast<double>(m)) && m >= T(0), who, ": mask of task '", task.name, "' at sample ", j,
                        " is ", m, ", expected a finite value >= 0");
                if (m == T(0)) continue;  // a missing label is not looked at
            }
            const T y = labels(t, j);
            require(valid_label(task, y), who, ": label of task '", task.name, "' at sample ", j, " is ", y, ", expected ",
                    expected_label(task));
        }
    }
}
}  // namespace detail

/// Samples as columns. x: features x N; labels: T x N, row t the labels of task t (class index for
/// multiclass); mask: T x N (non-zero where the label exists) or empty for "all present";
/// surfaces: each sample's surface for a tower-tree model (MultiTaskSpec::surfaces > 1), or empty;
/// teacher: a teacher's predictions (T x N, after the heads) for offline distillation, or empty.
template <class T>
struct MultiTaskData {
    Matrix<T> x, labels, mask;
    std::vector<Index> surfaces;
    Matrix<T> teacher;

    Index size() const { return x.cols(); }

    /// Throws shape_error (wrong shapes) or config_error (no samples, a non-finite feature, a mask
    /// value that is negative or not finite, a label that does not fit its task) naming the data set
    /// (`what`), the sample and the task or feature; the surfaces against a model of `model_surfaces`.
    void check(Index features, const std::vector<TaskSpec>& tasks, const std::string& what,
               Index model_surfaces = 1) const {
        const auto n_tasks = static_cast<Index>(tasks.size());
        const std::string who = "moe::MultiTaskData(" + what + ")";
        detail::check_rows(x, features, who, "check", "x");
        detail::check_shape(labels, n_tasks, x.cols(), who, "check", "labels");
        if (mask.size() != 0) detail::check_shape(mask, n_tasks, x.cols(), who, "check", "mask");
        detail::require(x.cols() > 0, who, ": no samples");
        for (Index j = 0; j < x.cols(); ++j)
            for (Index i = 0; i < x.rows(); ++i)
                if (!std::isfinite(static_cast<double>(x(i, j))))
                    throw config_error(detail::concat(who, ": feature ", i, " of sample ", j, " is ", x(i, j),
                                                      ", expected a finite value"));
        detail::check_labels(labels, mask, tasks, who);
        detail::check_surface_column(surfaces, x.cols(), model_surfaces, who);
    }
};

}  // namespace moe
