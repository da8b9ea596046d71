#pragma once
// Ranking candidates by a weighted combination of the tasks' predictions (the serving side of a
// multi-task recommender: score = sum_t w_t * prediction_t).
#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "moe/models/towers.hpp"

namespace moe {

/// The result of rank_candidates: candidates best first, their combined scores (indexed by
/// candidate), and every task's predictions (task t: 1 x N, indexed by candidate).
template <class T>
struct Ranking {
    std::vector<Index> order;
    std::vector<double> scores;
    std::vector<Matrix<T>> predictions;
};

/// Scores every candidate (a column of `candidates`, features x N) as sum_t w_t * p_t, with p_t the
/// prediction of task t after its head (a probability for binary tasks, the value for regression),
/// and sorts best first (ties keep the candidates' order). The weights live outside the model and
/// may be negative (a dislike task pushes down); tasks not named weigh 0. Unknown task names and
/// multiclass tasks (which have no single score) are config errors. Inference path, evaluation mode.
template <class M, class T = typename M::Scalar>
Ranking<T> rank_candidates(const M& model, const Matrix<T>& candidates, const std::map<std::string, double>& task_weights) {
    const auto& tasks = model.tasks();
    std::vector<double> w(tasks.size(), 0.0);
    for (const auto& [name, weight] : task_weights) {
        const std::size_t t = detail::task_index(tasks, name, "moe::rank_candidates");
        detail::require(tasks[t].kind != TaskKind::multiclass, "moe::rank_candidates: task '", name,
                        "' is multiclass and has no single score to weight");
        detail::require(std::isfinite(weight), "moe::rank_candidates: weight of task '", name, "' is ", weight);
        w[t] = weight;
    }
    InferenceWorkspace<T> ws;
    const auto& pred = model.predict(candidates, ws);
    Ranking<T> r;
    const Index n = candidates.cols();
    r.scores.assign(static_cast<std::size_t>(n), 0.0);
    for (std::size_t t = 0; t < tasks.size(); ++t) {
        r.predictions.emplace_back(pred[t]);
        if (w[t] != 0.0)
            for (Index j = 0; j < n; ++j) r.scores[static_cast<std::size_t>(j)] += w[t] * double(pred[t](0, j));
    }
    r.order.resize(static_cast<std::size_t>(n));
    std::iota(r.order.begin(), r.order.end(), Index(0));
    std::stable_sort(r.order.begin(), r.order.end(), [&](Index a, Index b) {
        return r.scores[static_cast<std::size_t>(a)] > r.scores[static_cast<std::size_t>(b)];
    });
    return r;
}

}  // namespace moe
