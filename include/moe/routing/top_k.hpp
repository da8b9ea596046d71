#pragma once
// Top-k selection of one router column and the gate weights of the chosen experts, forward and
// backward: shared by SparseMoE (per token) and SparseMMoE (per task and sample).
#include "moe/core/types.hpp"

namespace moe::detail {

/// Writes the indices of the k largest of score(0..n-1) to best[0..k-1], best first. Strict
/// comparisons: on ties the lower index wins, so the choice is deterministic.
template <class Score>
void select_top_k(Index n, Index k, Score&& score, Index* best) {
    Index filled = 0;
    for (Index i = 0; i < n; ++i) {
        const auto v = score(i);
        if (filled == k && !(v > score(best[k - 1]))) continue;
        Index pos = filled < k ? filled++ : k - 1;
        while (pos > 0 && v > score(best[pos - 1])) {
            best[pos] = best[pos - 1];
            --pos;
        }
        best[pos] = i;
    }
}

/// Gate weights of the k chosen experts from their probabilities p(best[r]): renormalised to sum to
/// 1 (Mixtral) or the raw probabilities (Switch). weight is indexed by rank.
template <class T, class Prob, class Weight>
void top_k_weights(Index k, const Index* best, Prob&& p, bool renormalize, Weight&& weight) {
    T sum = 0;
    for (Index r = 0; r < k; ++r) sum += p(best[r]);
    for (Index r = 0; r < k; ++r) weight(r) = renormalize ? p(best[r]) / sum : p(best[r]);
}

/// Backward of top_k_weights: adds dL/dp of the chosen experts to dp(best[r]) from dL/dweight.
/// Renormalised, w_r = p_r / S gives dp_j = (dw_j - sum_r dw_r w_r) / S.
template <class T, class Prob, class Weight, class DWeight, class DProb>
void top_k_weights_backward(Index k, const Index* best, Prob&& p, Weight&& weight, DWeight&& dweight, bool renormalize,
                            DProb&& dp) {
    if (!renormalize) {
        for (Index r = 0; r < k; ++r) dp(best[r]) += dweight(r);
        return;
    }
    T sum = 0, dot = 0;
    for (Index r = 0; r < k; ++r) sum += p(best[r]), dot += dweight(r) * weight(r);
    for (Index r = 0; r < k; ++r) dp(best[r]) += (dweight(r) - dot) / sum;
}

}  // namespace moe::detail
