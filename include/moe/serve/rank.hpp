#pragma once
// Ranking candidates by a weighted combination of the tasks' predictions (the serving side of a
// multi-task recommender: score = sum_t w_t * prediction_t).
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "moe/models/inference.hpp"

namespace moe {

/// The result of rank_candidates: candidates best first, their combined scores (indexed by
/// candidate), and every task's predictions (task t: 1 x N, indexed by candidate).
template <class T>
struct Ranking {
    std::vector<Index> order;
    std::vector<double> scores;
    std::vector<Matrix<T>> predictions;
    std::vector<double> task_weights;  ///< the weight of each task (model order) used for the scores
};

namespace detail {
/// Best first: larger scores first, NaN scores last, ties (and NaNs among themselves) in candidate
/// order. A strict weak order even with NaN, and std::sort with it allocates nothing.
inline bool ranks_before(const std::vector<double>& s, Index a, Index b) {
    const double sa = s[static_cast<std::size_t>(a)], sb = s[static_cast<std::size_t>(b)];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return nb;
    if (!na && sa != sb) return sa > sb;
    return a < b;
}
}  // namespace detail

/// Scores every candidate (a column of `candidates`, features x N) as sum_t w_t * p_t, with p_t the
/// prediction of task t after its head (a probability for binary tasks, the value for regression),
/// and sorts best first (ties keep the candidates' order; a NaN score, from a NaN feature, goes last).
/// The weights live outside the model and may be negative (a dislike task pushes down); tasks not
/// named weigh 0. Unknown task names, non-finite weights and multiclass tasks (which have no single
/// score) are config errors. Inference path, evaluation mode. A tower-tree model needs the
/// request's surface (one SurfaceIds for all candidates, or one per candidate).
///
/// This overload is the serving path: with the caller's workspace and result reused, a call with as
/// many candidates as the previous one allocates nothing. Safe from several threads on one const
/// model, each with its own workspace and result.
template <class M, class T = typename M::Scalar>
void rank_candidates(const M& model, const ConstView<typename M::Scalar>& candidates,
                     const std::map<std::string, double>& task_weights, InferenceWorkspace<T>& ws, Ranking<T>& out,
                     const SurfaceIds& surfaces = {}) {
    const auto& tasks = model.tasks();
    out.task_weights.assign(tasks.size(), 0.0);
    for (const auto& [name, weight] : task_weights) {
        const std::size_t t = detail::task_index(tasks, name, "moe::rank_candidates");
        detail::require(tasks[t].kind != TaskKind::multiclass, "moe::rank_candidates: task '", name,
                        "' is multiclass and has no single score to weight");
        detail::require(std::isfinite(weight), "moe::rank_candidates: weight of task '", name, "' is ", weight);
        out.task_weights[t] = weight;
    }
    const auto& pred = model.predict(candidates, ws, surfaces);
    const Index n = candidates.cols();
    const auto un = static_cast<std::size_t>(n);
    out.scores.assign(un, 0.0);
    out.predictions.resize(tasks.size());
    for (std::size_t t = 0; t < tasks.size(); ++t) {
        out.predictions[t] = pred[t];
        const double w = out.task_weights[t];
        if (w != 0.0)
            for (Index j = 0; j < n; ++j) out.scores[static_cast<std::size_t>(j)] += w * double(pred[t](0, j));
    }
    out.order.resize(un);
    std::iota(out.order.begin(), out.order.end(), Index(0));
    std::sort(out.order.begin(), out.order.end(), [&](Index a, Index b) { return detail::ranks_before(out.scores, a, b); });
}

/// As above, returning a new Ranking (allocates a workspace per call: for one-off use).
template <class M, class T = typename M::Scalar>
Ranking<T> rank_candidates(const M& model, const ConstView<typename M::Scalar>& candidates,
                           const std::map<std::string, double>& task_weights, const SurfaceIds& surfaces = {}) {
    InferenceWorkspace<T> ws;
    Ranking<T> r;
    rank_candidates(model, candidates, task_weights, ws, r, surfaces);
    return r;
}

}  // namespace moe
