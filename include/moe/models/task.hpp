#pragma once
// What a task is: a name, and the kind of its head.
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The head of a task. binary: one logit, prediction sigmoid(logit). regression: one output,
/// prediction = output (after a ReLU when relu_output: a non-negative target such as watch time).
/// multiclass: C logits, prediction softmax over them.
enum class TaskKind { binary, regression, multiclass };

inline const char* to_string(TaskKind k) {
    switch (k) {
        case TaskKind::binary: return "binary";
        case TaskKind::regression: return "regression";
        case TaskKind::multiclass: return "multiclass";
    }
    return "?";
}

/// One task of a multi-task model. Labels: binary 0/1, regression a number, multiclass a class
/// index in [0, classes).
struct TaskSpec {
    std::string name;
    TaskKind kind = TaskKind::binary;
    Index classes = 0;         ///< multiclass only: number of classes, at least 2
    bool relu_output = false;  ///< regression only: ReLU on the output (non-negative targets)

    /// Rows of the tower's output (and of its prediction): C for multiclass, else 1.
    Index outputs() const { return kind == TaskKind::multiclass ? classes : 1; }
};

inline TaskSpec binary_task(std::string name) { return {std::move(name), TaskKind::binary, 0, false}; }
inline TaskSpec regression_task(std::string name, bool relu_output = false) {
    return {std::move(name), TaskKind::regression, 0, relu_output};
}
inline TaskSpec multiclass_task(std::string name, Index classes) {
    return {std::move(name), TaskKind::multiclass, classes, false};
}

namespace detail {
/// Whether y is a label of the task: binary in [0, 1] (soft labels allowed), regression finite,
/// multiclass an integer class index in [0, classes). The one definition every check uses.
template <class T>
bool valid_binary_label(T y) { return y >= T(0) && y <= T(1); }
template <class T>
bool valid_regression_label(T y) { return std::isfinite(static_cast<double>(y)); }
template <class T>
bool valid_class_label(T y, Index classes) { return y >= T(0) && y < T(classes) && y == std::floor(y); }
template <class T>
bool valid_label(const TaskSpec& task, T y) {
    switch (task.kind) {
        case TaskKind::binary: return valid_binary_label(y);
        case TaskKind::regression: return valid_regression_label(y);
        case TaskKind::multiclass: return valid_class_label(y, task.classes);
    }
    return false;
}
inline std::string expected_label(const TaskSpec& task) {
    switch (task.kind) {
        case TaskKind::binary: return "a value in [0, 1]";
        case TaskKind::regression: return "a finite value";
        case TaskKind::multiclass: return concat("an integer class index in [0, ", task.classes - 1, "]");
    }
    return "?";
}

/// Whether two task lists describe the same tasks in the same order as a loss sees them (name, kind,
/// classes; the ReLU of a regression head does not change the loss).
inline bool same_tasks(const std::vector<TaskSpec>& a, const std::vector<TaskSpec>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t t = 0; t < a.size(); ++t)
        if (a[t].name != b[t].name || a[t].kind != b[t].kind || a[t].classes != b[t].classes) return false;
    return true;
}
inline std::string describe_tasks(const std::vector<TaskSpec>& tasks) {
    std::string s;
    for (const auto& t : tasks) {
        s += (s.empty() ? "" : ", ") + t.name + " (" + to_string(t.kind);
        if (t.kind == TaskKind::multiclass) s += " " + std::to_string(t.classes);
        if (t.relu_output) s += ", relu output";
        s += ")";
    }
    return s;
}

inline void check_tasks(const std::vector<TaskSpec>& tasks, const std::string& who) {
    require(!tasks.empty(), who, ": needs at least one task, got 0");
    std::set<std::string> names;
    for (std::size_t t = 0; t < tasks.size(); ++t) {
        const TaskSpec& s = tasks[t];
        require(!s.name.empty(), who, ": task ", t, " has an empty name");
        require(names.insert(s.name).second, who, ": task name '", s.name, "' is used twice");
        if (s.kind == TaskKind::multiclass)
            require(s.classes >= 2, who, ": multiclass task '", s.name, "' needs at least 2 classes, got ", s.classes);
        require(!s.relu_output || s.kind == TaskKind::regression, who, ": task '", s.name,
                "': relu_output applies to regression tasks only");
    }
}

/// The index of the task named `name`; config_error naming `who` and the known tasks otherwise.
/// (`who` is a C string: serving calls this per request and must not allocate.)
inline std::size_t task_index(const std::vector<TaskSpec>& tasks, const std::string& name, const char* who) {
    for (std::size_t t = 0; t < tasks.size(); ++t)
        if (tasks[t].name == name) return t;
    std::string known;
    for (const auto& s : tasks) known += (known.empty() ? "" : ", ") + s.name;
    throw config_error(std::string(who) + ": unknown task '" + name + "' (the model's tasks: " + known + ")");
}
}  // namespace detail

}  // namespace moe
