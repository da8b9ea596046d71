#pragma once
// A multi-task data set in memory.
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"
#include "moe/models/task.hpp"

namespace moe {

/// Samples as columns. x: features x N; labels: T x N, row t the labels of task t (class index for
/// multiclass); mask: T x N (non-zero where the label exists) or empty for "all present".
template <class T>
struct MultiTaskData {
    Matrix<T> x, labels, mask;

    Index size() const { return x.cols(); }

    /// Throws shape_error / config_error naming the data set when it does not fit the tasks.
    void check(Index features, const std::vector<TaskSpec>& tasks, const std::string& what) const {
        const auto n_tasks = static_cast<Index>(tasks.size());
        detail::check_rows(x, features, "moe::MultiTaskData(" + what + ")", "check", "x");
        detail::check_shape(labels, n_tasks, x.cols(), "moe::MultiTaskData(" + what + ")", "check", "labels");
        if (mask.size() != 0) detail::check_shape(mask, n_tasks, x.cols(), "moe::MultiTaskData(" + what + ")", "check", "mask");
        detail::require(x.cols() > 0, "moe::MultiTaskData(", what, "): no samples");
        for (Index t = 0; t < n_tasks; ++t) {
            const TaskSpec& task = tasks[static_cast<std::size_t>(t)];
            for (Index j = 0; j < x.cols(); ++j) {
                if (mask.size() != 0 && mask(t, j) == T(0)) continue;  // a missing label is not looked at
                const T y = labels(t, j);
                const bool ok = task.kind == TaskKind::binary       ? (y >= T(0) && y <= T(1))
                                : task.kind == TaskKind::regression ? std::isfinite(static_cast<double>(y))
                                                                    : (y >= T(0) && y < T(task.classes) && y == std::floor(y));
                detail::require(ok, "moe::MultiTaskData(", what, "): label of task '", task.name, "' at sample ", j, " is ",
                                y, ", expected ",
                                task.kind == TaskKind::binary       ? "a value in [0, 1]"
                                : task.kind == TaskKind::regression ? "a finite value"
                                                                    : "a class index below the number of classes");
            }
        }
    }
};

}  // namespace moe
