#pragma once
// Auxiliary losses of a router, each with its gradient, over E experts and N tokens.
//
// All take column-major E x N matrices (one column per token) and *add* coef * dLoss/d(input) into
// the gradient they are given, so a layer can sum several into one buffer.
//
//   switch_balance_loss  E * sum_i f_i P_i (Switch Transformer, Fedus et al. 2021). f_i is the share
//                        of the N k assignments routed to expert i (a count: no gradient), P_i the
//                        mean router probability of expert i over the tokens. 1 when both are uniform.
//   cv_squared           Var(v) / Mean(v)^2 of a vector of E values (population variance), the
//                        coefficient of variation squared of Shazeer et al. 2017. It is applied to
//                        the importance (sum over tokens of the gate weights after top-k) and to the
//                        load (sum over tokens of the probability that the expert is chosen).
//   router_z_loss        mean over tokens of (logsumexp of the logits)^2 (ST-MoE, Zoph et al. 2022).
//   smooth_load          Shazeer's differentiable estimate of each expert's load under router noise,
//                        to which cv_squared is applied (the "load" loss).
#include <cmath>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/view.hpp"

namespace moe {

/// E * sum_i f_i P_i with f_i = routed[i] / (N k) and P_i = mean_t probs(i, t). Adds
/// coef * dL/dprobs (E x N) to dprobs when it is not null. Returns the loss (without coef).
template <class T>
double switch_balance_loss(const ConstView<T>& probs, const std::vector<Index>& routed, Index k, double coef,
                           MatrixView<T>* dprobs) {
    const Index e = probs.rows(), n = probs.cols();
    detail::require(static_cast<Index>(routed.size()) == e, "moe::switch_balance_loss: ", routed.size(),
                    " expert counts for ", e, " experts");
    if (n == 0) return 0.0;
    // f_i = routed_i / (N k), computed where used: no scratch vector, nothing allocated.
    const auto f = [&](Index i) { return double(routed[std::size_t(i)]) / (double(n) * double(k)); };
    double loss = 0;
    for (Index i = 0; i < e; ++i) loss += f(i) * double(probs.row(i).sum()) / double(n);
    if (dprobs)
        for (Index t = 0; t < n; ++t)
            for (Index i = 0; i < e; ++i) (*dprobs)(i, t) += T(coef * double(e) * f(i) / double(n));
    return double(e) * loss;
}

/// Var(v) / Mean(v)^2 over the entries of v (population variance; 0 when there are fewer than two
/// entries or the mean is 0). Adds coef * dL/dv to dv (same length) when it is not null.
inline double cv_squared(const std::vector<double>& v, double coef, std::vector<double>* dv) {
    const std::size_t e = v.size();
    if (e < 2) return 0.0;
    double mean = 0;
    for (double x : v) mean += x;
    mean /= double(e);
    if (mean == 0) return 0.0;
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    var /= double(e);
    const double m2 = mean * mean;
    if (dv)
        for (std::size_t i = 0; i < e; ++i)
            (*dv)[i] += coef * (2 * (v[i] - mean) / double(e) / m2 - 2 * var / (m2 * mean) / double(e));
    return var / m2;
}

/// mean over the N tokens of (logsumexp_i logits(i, t))^2. Adds coef * dL/dlogits to dlogits when
/// it is not null (2 lse_t softmax(logits)_t / N per column).
template <class T>
double router_z_loss(const ConstView<T>& logits, double coef, MatrixView<T>* dlogits) {
    const Index e = logits.rows(), n = logits.cols();
    if (n == 0 || e == 0) return 0.0;
    double loss = 0;
    for (Index t = 0; t < n; ++t) {
        const double m = double(logits.col(t).maxCoeff());
        double s = 0;
        for (Index i = 0; i < e; ++i) s += std::exp(double(logits(i, t)) - m);
        const double lse = m + std::log(s);
        loss += lse * lse;
        if (dlogits)
            for (Index i = 0; i < e; ++i)
                (*dlogits)(i, t) += T(coef * 2 * lse * std::exp(double(logits(i, t)) - lse) / double(n));
    }
    return loss / double(n);
}

/// Shazeer's smooth load estimate (2017, appendix A): load_i = sum_t P(t, i), the probability that
/// expert i stays in token t's top k under a new draw of its noise alone,
///     P(t, i) = Phi((clean_i - threshold) / std_i),
/// threshold the k-th largest noisy logit of the *other* experts: the (k+1)-th largest noisy logit
/// when i is in the top k, else the k-th. clean, noisy, std are E x N (the logits before noise, after
/// noise, and the noise's standard deviation); choice is k x N (column t: token t's top k). Writes
/// the estimate to load (E). With dload (dL/dload_i), adds dL/dclean to dclean, dL/dnoisy to dnoisy
/// and dL/dstd to dstd instead.
template <class T>
void smooth_load(const ConstView<T>& clean, const ConstView<T>& noisy, const ConstView<T>& std_dev,
                 const Eigen::Map<const Matrix<Index>>& choice, std::vector<double>& load, const std::vector<double>* dload,
                 MatrixView<T>* dclean, MatrixView<T>* dnoisy, MatrixView<T>* dstd) {
    const Index e = clean.rows(), n = clean.cols(), k = choice.rows();
    if (!dload) load.assign(std::size_t(e), 0.0);
    auto chosen = [&](Index i, Index t) {
        for (Index r = 0; r < k; ++r)
            if (choice(r, t) == i) return true;
        return false;
    };
    for (Index t = 0; t < n; ++t) {
        const Index kth = choice(k - 1, t);
        Index next = -1;  // the best expert outside the top k
        for (Index i = 0; i < e; ++i)
            if (!chosen(i, t) && (next < 0 || noisy(i, t) > noisy(next, t))) next = i;
        for (Index i = 0; i < e; ++i) {
            const Index thr = chosen(i, t) ? next : kth;
            const double s = double(std_dev(i, t)), z = (double(clean(i, t)) - double(noisy(thr, t))) / s;
            if (!dload) {
                load[std::size_t(i)] += 0.5 * std::erfc(-z / std::sqrt(2.0));
                continue;
            }
            const double g = (*dload)[std::size_t(i)] * std::exp(-0.5 * z * z) / 2.5066282746310002;
            (*dclean)(i, t) += T(g / s);
            (*dnoisy)(thr, t) -= T(g / s);
            (*dstd)(i, t) -= T(g * z / s);
        }
    }
}

}  // namespace moe
