#pragma once
// The small specs of every model kind that the tests share, and the gradient check of a bare layer.
#include <vector>

#include "moe/moe.hpp"
#include "support/catch.hpp"
#include "moe/testing/gradcheck.hpp"

namespace moe::testing {

/// One task of every kind: binary, regression with and without a ReLU head, multiclass.
inline std::vector<TaskSpec> all_task_kinds() {
    return {binary_task("click"), regression_task("watch", true), regression_task("score"), multiclass_task("rating", 3)};
}
inline std::vector<TaskSpec> three_task_kinds() {
    return {binary_task("income"), regression_task("hours"), multiclass_task("status", 3)};
}

inline MMoESpec small_mmoe(std::vector<TaskSpec> tasks = all_task_kinds()) {
    MMoESpec s;
    s.input = 5;
    s.experts = 3;
    s.expert_hidden = {6};
    s.expert_dim = 4;
    s.tower_hidden = {3};
    s.tasks = std::move(tasks);
    return s;
}
/// An MMoE with DSelect-k gates over 5 experts (not a power of two: the reachability term is on).
inline MMoESpec small_dselect_mmoe(std::vector<TaskSpec> tasks = three_task_kinds()) {
    MMoESpec s = small_mmoe(std::move(tasks));
    s.experts = 5;
    s.gate = GateKind::dselect_k;
    s.dselect_k = 2;
    s.dselect_gamma = 4.0;  // a wide smooth step: the random init stays inside it, every gradient is live
    s.dselect_entropy = 0.05;
    return s;
}
inline SharedBottomSpec small_shared_bottom(std::vector<TaskSpec> tasks = all_task_kinds()) {
    SharedBottomSpec s;
    s.input = 5;
    s.bottom_hidden = {7};
    s.bottom_dim = 4;
    s.tower_hidden = {3};
    s.tasks = std::move(tasks);
    return s;
}
/// A PLE of `levels` levels whose levels differ in their expert counts and widths.
inline PLESpec small_ple(std::vector<TaskSpec> tasks = three_task_kinds(), int levels = 2) {
    PLESpec s;
    s.input = 5;
    for (int l = 0; l < levels; ++l) s.levels.push_back(PLELevelSpec{2, 2, {6}, 4 - l});
    s.levels.front().task_experts = 1;
    s.tower_hidden = {3};
    s.tasks = std::move(tasks);
    return s;
}
inline SparseMMoESpec small_sparse_mmoe(Index k = 2, std::vector<TaskSpec> tasks = three_task_kinds()) {
    SparseMMoESpec s;
    static_cast<MMoESpec&>(s) = small_mmoe(std::move(tasks));
    s.experts = 4;
    s.k = k;
    return s;
}
inline SparseMoESpec small_sparse_moe(Index experts = 5, Index k = 2) {
    SparseMoESpec s;
    s.dim = 6;
    s.ffn = 10;
    s.experts = experts;
    s.k = k;
    return s;
}

/// Gradient check of a layer built on its own (not in a Model): binds a store, initialises it from
/// the seed, freezes dropout masks, and checks (moe::testing::check_layer). Returns the largest error.
template <class Layer>
double gradcheck_bare(Layer& layer, const Matrix<double>& x, std::uint64_t seed = 1) {
    ParameterStore<double> store;
    store.bind(layer);
    Rng rng(seed);
    layer.reset_parameters(rng);
    freeze_dropout(layer);
    const auto r = check_layer(layer, store, x);
    if (r.max_error >= 1e-6) UNSCOPED_INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}

}  // namespace moe::testing
