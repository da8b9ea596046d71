#pragma once
// Evaluation metrics of the tasks: exact AUC, logloss, RMSE, accuracy.
//
// All take 1 x N rows (predictions after the head, labels) and an optional 1 x N mask; a sample
// counts where the mask is non-zero. Multiclass accuracy takes the C x N probabilities.
//
// Non-finite predictions: a metric over predictions of which a counted one is NaN is NaN (auc gives
// an optional holding NaN): garbage in is reported, never turned into a plausible number, and no
// loop depends on comparisons that NaN breaks. rank_candidates puts NaN scores last.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/view.hpp"

namespace moe {

namespace detail {
template <class T>
bool counted(const ConstView<T>& mask, Index j) {
    return mask.size() == 0 || mask(0, j) != T(0);
}
/// True when any counted entry of m (a column per sample) is NaN.
template <class T>
bool any_counted_nan(const ConstView<T>& m, const ConstView<T>& mask) {
    for (Index j = 0; j < m.cols(); ++j)
        if (counted(mask, j))
            for (Index i = 0; i < m.rows(); ++i)
                if (std::isnan(static_cast<double>(m(i, j)))) return true;
    return false;
}
template <class T>
void check_metric_inputs(const ConstView<T>& pred, const ConstView<T>& labels, const ConstView<T>& mask,
                         const char* fn) {
    check_shape(labels, 1, pred.cols(), "moe::metrics", fn, "labels");
    if (mask.size() != 0) check_shape(mask, 1, pred.cols(), "moe::metrics", fn, "mask");
}
}  // namespace detail

/// Exact ROC AUC: the probability that a random positive (label >= 0.5) scores above a random
/// negative, ties counting one half (the Mann-Whitney statistic with mid-ranks). O(N log N).
/// Returns nullopt when the counted labels hold one class only: the AUC is undefined there; NaN
/// when a counted score is NaN (infinite scores rank as the extremes they are).
template <class T>
std::optional<double> auc(const ConstView<T>& scores, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
    detail::check_metric_inputs(scores, labels, mask, "auc");
    detail::check_rows(scores, 1, "moe::metrics", "auc", "scores");
    const bool nan = detail::any_counted_nan(scores, mask);
    std::vector<Index> idx;
    idx.reserve(static_cast<std::size_t>(scores.cols()));
    for (Index j = 0; j < scores.cols(); ++j)
        if (detail::counted(mask, j)) idx.push_back(j);
    if (nan) {  // sorting with < needs a strict weak order, which NaN breaks: never sort them
        bool pos = false, neg = false;
        for (Index j : idx) (labels(0, j) >= T(0.5) ? pos : neg) = true;
        if (!pos || !neg) return std::nullopt;
        return std::numeric_limits<double>::quiet_NaN();
    }
    std::sort(idx.begin(), idx.end(), [&](Index a, Index b) { return scores(0, a) < scores(0, b); });
    double positives = 0, rank_sum = 0;
    for (std::size_t i = 0; i < idx.size();) {
        std::size_t k = i;  // [i, k) is a run of tied scores: each gets the mean rank
        while (k < idx.size() && scores(0, idx[k]) == scores(0, idx[i])) ++k;
        const double mid_rank = 0.5 * double(i + 1 + k);  // mean of ranks i+1 .. k
        for (std::size_t r = i; r < k; ++r)
            if (labels(0, idx[r]) >= T(0.5)) positives += 1, rank_sum += mid_rank;
        i = k;
    }
    const double negatives = double(idx.size()) - positives;
    if (positives == 0 || negatives == 0) return std::nullopt;
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

/// Mean binary cross-entropy of probabilities (clipped to [1e-15, 1 - 1e-15]); NaN without counted
/// samples or when a counted probability is NaN.
template <class T>
double logloss(const ConstView<T>& probs, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
    detail::check_metric_inputs(probs, labels, mask, "logloss");
    if (detail::any_counted_nan(probs, mask)) return std::numeric_limits<double>::quiet_NaN();
    double sum = 0, n = 0;
    for (Index j = 0; j < probs.cols(); ++j) {
        if (!detail::counted(mask, j)) continue;
        const double p = std::clamp(double(probs(0, j)), 1e-15, 1 - 1e-15), y = double(labels(0, j));
        sum -= y * std::log(p) + (1 - y) * std::log(1 - p);
        n += 1;
    }
    return n > 0 ? sum / n : std::numeric_limits<double>::quiet_NaN();
}

/// Root mean squared error; NaN without counted samples (and, as arithmetic gives, with a NaN prediction).
template <class T>
double rmse(const ConstView<T>& pred, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
    detail::check_metric_inputs(pred, labels, mask, "rmse");
    double sum = 0, n = 0;
    for (Index j = 0; j < pred.cols(); ++j) {
        if (!detail::counted(mask, j)) continue;
        const double r = double(pred(0, j)) - double(labels(0, j));
        sum += r * r;
        n += 1;
    }
    return n > 0 ? std::sqrt(sum / n) : std::numeric_limits<double>::quiet_NaN();
}

/// Accuracy. Binary (1 x N probabilities): p >= 0.5 predicts 1. Multiclass (C x N probabilities,
/// labels are class indices): the arg max predicts. NaN without counted samples or when a counted
/// probability is NaN (it predicts no class).
template <class T>
double accuracy(const ConstView<T>& probs, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
    detail::check_metric_inputs(probs, labels, mask, "accuracy");
    if (detail::any_counted_nan(probs, mask)) return std::numeric_limits<double>::quiet_NaN();
    double hits = 0, n = 0;
    for (Index j = 0; j < probs.cols(); ++j) {
        if (!detail::counted(mask, j)) continue;
        Index predicted = 0;
        if (probs.rows() == 1) predicted = probs(0, j) >= T(0.5);
        else probs.col(j).maxCoeff(&predicted);
        hits += double(predicted) == double(labels(0, j));
        n += 1;
    }
    return n > 0 ? hits / n : std::numeric_limits<double>::quiet_NaN();
}

/// Mean cross-entropy of C x N class probabilities against class indices (clipped at 1e-15, as
/// logloss); NaN without counted samples or when a counted probability is NaN.
template <class T>
double multiclass_logloss(const ConstView<T>& probs, const ConstView<T>& labels, const ConstView<T>& mask = {}) {
    detail::check_metric_inputs(probs, labels, mask, "multiclass_logloss");
    if (detail::any_counted_nan(probs, mask)) return std::numeric_limits<double>::quiet_NaN();
    double sum = 0, n = 0;
    for (Index j = 0; j < probs.cols(); ++j) {
        if (!detail::counted(mask, j)) continue;
        const double y = double(labels(0, j));
        if (!(y >= 0 && y < double(probs.rows())))
            throw config_error(detail::concat("moe::metrics::multiclass_logloss: label of sample ", j, " is ", y,
                                              ", expected a class index below ", probs.rows()));
        sum -= std::log(std::max(1e-15, double(probs(static_cast<Index>(y), j))));
        n += 1;
    }
    return n > 0 ? sum / n : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace moe
