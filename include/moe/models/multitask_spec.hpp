#pragma once
// What every multi-task model's spec has in common, declared once.
#include <vector>

#include "moe/layers/mlp.hpp"
#include "moe/models/task.hpp"

namespace moe {

/// The input width, the tasks and the towers of a multi-task model, and the options its hidden
/// layers share. MMoESpec, PLESpec and SharedBottomSpec (and so SparseMMoESpec) derive from it.
struct MultiTaskSpec {
    Index input = 0;                  ///< features of x
    std::vector<Index> tower_hidden;  ///< hidden widths of each tower
    std::vector<TaskSpec> tasks;
    ActivationKind activation = ActivationKind::relu;  ///< of every hidden layer (experts, bottom, towers)
    bool batchnorm = false;      ///< BatchNorm1d after the hidden activations of experts (or bottom) and towers
    double tower_dropout = 0.0;  ///< dropout after the hidden layers of the towers
    /// Surfaces of a tower tree: S > 1 gives every task one tower per surface, and forward/predict
    /// take each sample's surface (SurfaceIds). 1: one tower per task.
    Index surfaces = 1;

    /// The MLP of task t's tower on a representation of `in` features.
    MLPSpec tower_mlp(Index in, const TaskSpec& task) const {
        return make_mlp_spec(in, tower_hidden, task.outputs(), activation, batchnorm, tower_dropout, false);
    }
};

namespace detail {
/// The checks every multi-task model makes of the common part of its spec.
inline void check_multitask_spec(const MultiTaskSpec& s, const std::string& name) {
    require(s.input > 0, name, ": input must be positive, got ", s.input);
    require(s.surfaces >= 1, name, ": surfaces must be at least 1, got ", s.surfaces);
    check_tasks(s.tasks, name);
}
}  // namespace detail

}  // namespace moe
