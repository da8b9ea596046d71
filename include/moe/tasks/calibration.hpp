#pragma once
// Calibration of binary predictions after training: Platt scaling and isotonic regression, fitted
// on held-out scores and labels, and the measures of calibration (expected calibration error and
// the calibration ratio). Plain functions of std::vector<double>: what a serving system stores is
// two numbers (Platt) or two short arrays (isotonic).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

namespace detail {
/// Checks scores and binary labels for a calibration fit; returns the number of positives.
inline std::size_t check_calibration_data(const std::vector<double>& scores, const std::vector<double>& labels,
                                          const char* who) {
    if (scores.size() != labels.size())
        throw shape_error(concat(who, ": ", scores.size(), " scores but ", labels.size(), " labels"));
    require(!scores.empty(), who, ": no samples");
    std::size_t positives = 0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        require(std::isfinite(scores[i]), who, ": score ", i, " is ", scores[i], ", expected a finite value");
        require(labels[i] == 0.0 || labels[i] == 1.0, who, ": label ", i, " is ", labels[i], ", expected 0 or 1");
        positives += labels[i] == 1.0;
    }
    require(positives > 0 && positives < scores.size(), who, ": the labels hold one class only (", positives, " positives of ",
            scores.size(), "); calibration needs both");
    return positives;
}
}  // namespace detail

/// Platt scaling (Platt 1999): p = 1 / (1 + exp(-(a s + b))) for a score s (a logit), a and b
/// maximising the likelihood of the labels, with Platt's smoothed targets (N+ + 1) / (N+ + 2) for
/// positives and 1 / (N- + 2) for negatives (as scikit-learn's sigmoid calibration). Fitted by
/// Newton's method with a backtracking line search.
struct PlattScaling {
    double a = 1.0, b = 0.0;

    /// The calibrated probability of a score.
    double operator()(double score) const {
        const double z = a * score + b;
        return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
    }

    /// Fits a and b on held-out scores and labels (0 or 1, both classes present, finite scores).
    static PlattScaling fit(const std::vector<double>& scores, const std::vector<double>& labels) {
        const std::size_t pos = detail::check_calibration_data(scores, labels, "moe::PlattScaling::fit");
        const double neg = double(scores.size() - pos);
        const double t_pos = (double(pos) + 1) / (double(pos) + 2), t_neg = 1 / (neg + 2);
        auto loss = [&](double a, double b) {  // negative log-likelihood against the smoothed targets
            double l = 0;
            for (std::size_t i = 0; i < scores.size(); ++i) {
                const double z = a * scores[i] + b, t = labels[i] == 1.0 ? t_pos : t_neg;
                // log(1 + exp(z)) - t z, stable for large |z|
                l += (z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z))) - t * z;
            }
            return l;
        };
        PlattScaling p{0.0, std::log((double(pos) + 1) / (neg + 1))};
        double current = loss(p.a, p.b);
        for (int it = 0; it < 100; ++it) {
            double ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
            for (std::size_t i = 0; i < scores.size(); ++i) {
                const double q = p(scores[i]), t = labels[i] == 1.0 ? t_pos : t_neg, d = q - t, w = q * (1 - q);
                ga += d * scores[i];
                gb += d;
                haa += w * scores[i] * scores[i];
                hab += w * scores[i];
                hbb += w;
            }
            if (std::abs(ga) + std::abs(gb) < 1e-12 * double(scores.size())) break;
            // Newton direction of the 2x2 system, the Hessian nudged to stay positive definite.
            haa += 1e-12;
            hbb += 1e-12;
            const double det = haa * hbb - hab * hab;
            const double da = -(hbb * ga - hab * gb) / det, db = -(haa * gb - hab * ga) / det;
            if (!std::isfinite(da) || !std::isfinite(db)) break;  // scores so large that the Hessian overflows
            double step = 1;
            // "not <=": a step whose loss is NaN is refused like a step that does not descend.
            while (step > 1e-10 && !(loss(p.a + step * da, p.b + step * db) <= current)) step /= 2;
            if (step <= 1e-10) break;
            p.a += step * da;
            p.b += step * db;
            const double next = loss(p.a, p.b);
            if (current - next < 1e-15 * std::abs(current)) {
                current = next;
                break;
            }
            current = next;
        }
        return p;
    }
};

/// Isotonic regression (pool adjacent violators): the non-decreasing function of the score that
/// is closest to the labels in squared error, as scikit-learn's IsotonicRegression: samples with
/// equal scores are first merged (their labels averaged), the fitted points are interpolated
/// linearly in between and held constant outside the scores seen. Shapes: fitted on n scores and
/// labels; thresholds() and values() are the fitted points (at most n), increasing scores.
class IsotonicRegression {
public:
    /// Fits on held-out scores (finite) and labels (0 or 1, both classes present).
    static IsotonicRegression fit(const std::vector<double>& scores, const std::vector<double>& labels) {
        detail::check_calibration_data(scores, labels, "moe::IsotonicRegression::fit");
        std::vector<std::size_t> order(scores.size());
        std::iota(order.begin(), order.end(), std::size_t(0));
        std::sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return scores[i] < scores[j]; });
        // Blocks of (score, mean label, weight): one per distinct score, then pooled while they violate.
        std::vector<double> x, y, w;
        for (const std::size_t i : order) {
            if (!x.empty() && x.back() == scores[i]) {
                y.back() = (y.back() * w.back() + labels[i]) / (w.back() + 1);
                w.back() += 1;
            } else {
                x.push_back(scores[i]);
                y.push_back(labels[i]);
                w.push_back(1);
            }
        }
        // PAV over the distinct scores: a stack of blocks, each [first, last] index with its mean.
        std::vector<std::size_t> first;
        std::vector<double> mean, weight;
        for (std::size_t i = 0; i < x.size(); ++i) {
            first.push_back(i);
            mean.push_back(y[i]);
            weight.push_back(w[i]);
            while (mean.size() > 1 && mean[mean.size() - 2] > mean.back()) {
                const std::size_t k = mean.size() - 1;
                mean[k - 1] = (mean[k - 1] * weight[k - 1] + mean[k] * weight[k]) / (weight[k - 1] + weight[k]);
                weight[k - 1] += weight[k];
                first.pop_back();
                mean.pop_back();
                weight.pop_back();
            }
        }
        IsotonicRegression r;
        r.x_ = x;
        r.y_.resize(x.size());
        for (std::size_t b = 0; b < first.size(); ++b) {
            const std::size_t end = b + 1 < first.size() ? first[b + 1] : x.size();
            for (std::size_t i = first[b]; i < end; ++i) r.y_[i] = mean[b];
        }
        return r;
    }

    /// The calibrated value of a score: linear between the fitted points, clipped outside them.
    /// A NaN score gives NaN.
    double operator()(double score) const {
        // An explicit throw (not require): GCC then knows the points below exist (-Wnull-dereference).
        if (x_.empty()) throw config_error("moe::IsotonicRegression: not fitted (make one with IsotonicRegression::fit)");
        if (std::isnan(score)) return score;
        const std::size_t last = x_.size() - 1;
        if (score <= x_[0]) return y_[0];
        if (score >= x_[last]) return y_[last];
        const std::size_t hi = std::size_t(std::upper_bound(x_.begin(), x_.end(), score) - x_.begin()), lo = hi - 1;
        const double t = (score - x_[lo]) / (x_[hi] - x_[lo]);
        return y_[lo] + t * (y_[hi] - y_[lo]);
    }

    /// The fitted points: distinct training scores, increasing, and their fitted values.
    const std::vector<double>& thresholds() const { return x_; }
    const std::vector<double>& values() const { return y_; }

    /// A fit from its points (as thresholds() and values() gave them, e.g. read from a model
    /// file): thresholds finite and strictly increasing, values finite and non-decreasing, at least
    /// one point. Errors name `who`.
    static IsotonicRegression from_points(std::vector<double> thresholds, std::vector<double> values,
                                          const std::string& who = "moe::IsotonicRegression::from_points") {
        if (thresholds.size() != values.size())
            throw shape_error(detail::concat(who, ": ", thresholds.size(), " thresholds but ", values.size(), " values"));
        detail::require(!thresholds.empty(), who, ": no points");
        for (std::size_t i = 0; i < thresholds.size(); ++i) {
            detail::require(std::isfinite(thresholds[i]) && std::isfinite(values[i]), who, ": point ", i, " is (",
                            thresholds[i], ", ", values[i], "), expected finite values");
            detail::require(i == 0 || (thresholds[i] > thresholds[i - 1] && values[i] >= values[i - 1]), who, ": point ", i,
                            " is (", thresholds[i], ", ", values[i], ") after (", i ? thresholds[i - 1] : 0.0, ", ",
                            i ? values[i - 1] : 0.0, "); thresholds must increase and values not decrease");
        }
        IsotonicRegression r;
        r.x_ = std::move(thresholds);
        r.y_ = std::move(values);
        return r;
    }

private:
    std::vector<double> x_, y_;
};

namespace detail {
/// Checks predicted probabilities (in [0, 1]; NaN refused) against binary labels.
inline void check_probabilities(const std::vector<double>& probabilities, const std::vector<double>& labels, const char* who) {
    if (probabilities.size() != labels.size())
        throw shape_error(concat(who, ": ", probabilities.size(), " predictions but ", labels.size(), " labels"));
    require(!labels.empty(), who, ": no samples");
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const double p = probabilities[i];
        require(p >= 0 && p <= 1, who, ": prediction ", i, " is ", p, ", expected a probability in [0, 1]");
        require(labels[i] == 0.0 || labels[i] == 1.0, who, ": label ", i, " is ", labels[i], ", expected 0 or 1");
    }
}
}  // namespace detail

/// One bin of a reliability curve: the samples whose prediction falls in [lower, upper).
struct ReliabilityBin {
    double lower = 0, upper = 0;
    Index count = 0;
    double mean_prediction = 0;  ///< 0 when the bin is empty
    double fraction_positive = 0;
};

/// The reliability curve over `bins` equal-width bins of [0, 1] (a probability of exactly 1 falls
/// in the last bin): per bin the mean prediction against the fraction of positives. Probabilities
/// must be in [0, 1], labels 0 or 1; bins in [1, 2^20].
inline std::vector<ReliabilityBin> reliability_curve(const std::vector<double>& probabilities, const std::vector<double>& labels,
                                                     Index bins = 10, const char* who = "moe::reliability_curve") {
    detail::check_probabilities(probabilities, labels, who);
    detail::require(bins > 0 && bins <= (Index(1) << 20), who, ": bins must be in [1, 2^20], got ", bins);
    std::vector<ReliabilityBin> curve(static_cast<std::size_t>(bins));
    for (std::size_t b = 0; b < curve.size(); ++b)
        curve[b].lower = double(b) / double(bins), curve[b].upper = double(b + 1) / double(bins);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const double p = probabilities[i];
        ReliabilityBin& bin = curve[std::min(std::size_t(bins) - 1, std::size_t(p * double(bins)))];
        ++bin.count;
        bin.mean_prediction += p;
        bin.fraction_positive += labels[i];
    }
    for (ReliabilityBin& bin : curve)
        if (bin.count > 0) bin.mean_prediction /= double(bin.count), bin.fraction_positive /= double(bin.count);
    return curve;
}

/// Expected calibration error over `bins` equal-width bins of [0, 1] (a probability of exactly 1
/// falls in the last bin): sum over bins of (samples in the bin / n) |mean prediction - mean
/// label|. Probabilities must be in [0, 1], labels 0 or 1.
inline double expected_calibration_error(const std::vector<double>& probabilities, const std::vector<double>& labels,
                                         Index bins = 10) {
    double ece = 0;
    for (const ReliabilityBin& bin : reliability_curve(probabilities, labels, bins, "moe::expected_calibration_error"))
        ece += double(bin.count) * std::abs(bin.mean_prediction - bin.fraction_positive);
    return ece / double(labels.size());
}

/// Calibration ratio: sum of predictions / sum of labels (1 is calibrated on average; NaN when the
/// labels hold no positive). Inputs checked as for expected_calibration_error.
inline double calibration_ratio(const std::vector<double>& probabilities, const std::vector<double>& labels) {
    detail::check_probabilities(probabilities, labels, "moe::calibration_ratio");
    const double sp = std::accumulate(probabilities.begin(), probabilities.end(), 0.0);
    const double sy = std::accumulate(labels.begin(), labels.end(), 0.0);
    return sy > 0 ? sp / sy : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace moe
