#pragma once
// Choosing the next token from a language model's logits: greedy, or sampled at a temperature from
// the smallest set of tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// How sample_token chooses: temperature 0 is greedy (the largest logit); otherwise softmax(logits /
/// temperature) restricted to the most likely tokens whose probabilities sum to at least top_p
/// (1: all of them), renormalised.
struct SamplingOptions {
    double temperature = 1.0;  ///< >= 0
    double top_p = 1.0;        ///< in (0, 1]
};

/// The next token for one column of logits (vocab values). -inf logits are never sampled, a +inf one
/// always is; NaN logits, or all of them -inf, are refused (config_error).
/// Allocation: a vector of vocab indices per call.
template <class Vec>
Index sample_token(const Vec& logits, const SamplingOptions& o, Rng& rng) {
    const Index n = Index(logits.size());
    detail::require(n > 0, "moe::sample_token: no logits");
    detail::require(o.temperature >= 0 && std::isfinite(o.temperature), "moe::sample_token: temperature must be finite and >= 0, got ",
                    o.temperature);
    detail::require(o.top_p > 0 && o.top_p <= 1, "moe::sample_token: top_p must be in (0, 1], got ", o.top_p);
    double top = -INFINITY;
    Index best = 0;
    for (Index i = 0; i < n; ++i) {
        const double v = double(logits(i));
        detail::require(!std::isnan(v), "moe::sample_token: logit ", i, " is NaN");
        if (v > top) top = v, best = i;
    }
    // Greedy; and a +inf logit takes all the probability (the first of them, as greedy).
    if (o.temperature == 0.0 || top == INFINITY) return best;
    detail::require(top > -INFINITY, "moe::sample_token: every logit is -inf");
    std::vector<double> p(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) p[std::size_t(i)] = std::exp((double(logits(i)) - top) / o.temperature);
    std::vector<Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Index(0));
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return p[std::size_t(a)] > p[std::size_t(b)]; });
    const double total = std::accumulate(p.begin(), p.end(), 0.0);
    double kept = 0;
    std::size_t m = 0;
    while (m < order.size() && (m == 0 || kept < o.top_p * total)) kept += p[std::size_t(order[m++])];
    double u = rng.uniform() * kept;
    for (std::size_t i = 0; i < m; ++i) {
        u -= p[std::size_t(order[i])];
        if (u < 0) return order[i];
    }
    return order[m - 1];
}

}  // namespace moe
