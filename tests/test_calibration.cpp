// Calibration after training: isotonic regression against a brute-force reference (ties, constant
// runs), Platt scaling at the likelihood's optimum and on data from a known sigmoid, the expected
// calibration error and the calibration ratio, and bad input.
#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/tasks/calibration.hpp"
#include "support/catch.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_calibration {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
/// The isotonic fit at each distinct score by the min-max formula, O(n^3): the value at point i is
/// max over j <= i of min over k >= i of the weighted mean of points j..k (points: distinct scores
/// with their mean label and count).
std::vector<double> isotonic_brute_force(std::vector<double> x, const std::vector<double>& y) {
    std::vector<std::size_t> order(x.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::vector<double> px, sum, count;
    for (std::size_t i : order) {
        if (!px.empty() && px.back() == x[i]) {
            sum.back() += y[i];
            count.back() += 1;
        } else {
            px.push_back(x[i]);
            sum.push_back(y[i]);
            count.push_back(1);
        }
    }
    std::vector<double> fit(px.size());
    for (std::size_t i = 0; i < px.size(); ++i) {
        double best = -1e300;
        for (std::size_t j = 0; j <= i; ++j) {
            double lowest = 1e300;
            for (std::size_t k = i; k < px.size(); ++k) {
                double s = 0, c = 0;
                for (std::size_t m = j; m <= k; ++m) s += sum[m], c += count[m];
                lowest = std::min(lowest, s / c);
            }
            best = std::max(best, lowest);
        }
        fit[i] = best;
    }
    return fit;
}
}  // namespace

TEST_CASE("IsotonicRegression: pool adjacent violators as the brute-force reference; ties merged first", "[calibration]") {
    // Hand cases: a violation pooled; ties at one score averaged before pooling; a constant run.
    auto a = IsotonicRegression::fit({1, 2, 3, 4}, {0, 1, 0, 1});
    CHECK(a.values() == std::vector<double>{0, 0.5, 0.5, 1});
    auto ties = IsotonicRegression::fit({1, 1, 2}, {0, 1, 0});
    REQUIRE(ties.thresholds() == std::vector<double>{1, 2});
    CHECK(ties.values()[0] == Approx(1.0 / 3));
    CHECK(ties.values()[1] == Approx(1.0 / 3));
    auto flat = IsotonicRegression::fit({3, 2, 1, 0}, {0, 0, 1, 1});  // decreasing labels: one constant
    for (double v : flat.values()) CHECK(v == Approx(0.5));
    // Interpolation between the fitted points, clipping outside them.
    CHECK(a(2.5) == Approx(0.5));
    CHECK(a(3.5) == Approx(0.75));
    CHECK(a(-10) == 0.0);
    CHECK(a(10) == 1.0);
    CHECK(std::isnan(a(std::nan(""))));
    // Random data with many ties against the min-max formula.
    Rng rng(4);
    for (int rep = 0; rep < 20; ++rep) {
        std::vector<double> x(40), y(40);
        for (std::size_t i = 0; i < x.size(); ++i) {
            x[i] = std::floor(rng.uniform() * 15);  // about 15 distinct scores: ties everywhere
            y[i] = rng.uniform() < 0.2 + 0.04 * x[i] ? 1.0 : 0.0;
        }
        y[0] = 0;
        y[1] = 1;  // both classes
        const auto fit = IsotonicRegression::fit(x, y);
        const auto expected = isotonic_brute_force(x, y);
        REQUIRE(fit.values().size() == expected.size());
        for (std::size_t i = 0; i < expected.size(); ++i) CHECK(fit.values()[i] == Approx(expected[i]).margin(1e-12));
        for (std::size_t i = 1; i < fit.values().size(); ++i) CHECK(fit.values()[i] >= fit.values()[i - 1]);
    }
}

TEST_CASE("PlattScaling: the likelihood's optimum, and a known sigmoid recovered", "[calibration]") {
    Rng rng(7);
    std::vector<double> s(20000), y(20000);
    for (std::size_t i = 0; i < s.size(); ++i) {
        s[i] = rng.normal() * 2;
        const double p = 1 / (1 + std::exp(-(2.0 * s[i] - 1.0)));
        y[i] = rng.uniform() < p ? 1.0 : 0.0;
    }
    const PlattScaling p = PlattScaling::fit(s, y);
    CHECK(p.a == Approx(2.0).margin(0.1));
    CHECK(p.b == Approx(-1.0).margin(0.1));
    // At the optimum the gradient of the likelihood (against Platt's smoothed targets) is zero.
    double pos = 0;
    for (double v : y) pos += v;
    const double tp = (pos + 1) / (pos + 2), tn = 1 / (double(y.size()) - pos + 2);
    double ga = 0, gb = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const double d = p(s[i]) - (y[i] == 1.0 ? tp : tn);
        ga += d * s[i];
        gb += d;
    }
    CHECK(std::abs(ga) < 1e-6 * double(s.size()));
    CHECK(std::abs(gb) < 1e-6 * double(s.size()));
    // Probabilities stay finite and in [0, 1] for extreme scores.
    CHECK(p(1e6) == Approx(1.0));
    CHECK(p(-1e6) == Approx(0.0).margin(1e-300));
}

TEST_CASE("expected_calibration_error and calibration_ratio", "[calibration]") {
    // Two bins: [0, 0.5): predictions 0.1, 0.3 (mean 0.2), labels 0, 1 (mean 0.5); [0.5, 1]: 0.9 and
    // 1.0 (mean 0.95), labels 1, 1. ECE = 2/4 * 0.3 + 2/4 * 0.05.
    const std::vector<double> p{0.1, 0.3, 0.9, 1.0}, y{0, 1, 1, 1};
    CHECK(expected_calibration_error(p, y, 2) == Approx(0.175));
    CHECK(calibration_ratio(p, y) == Approx(2.3 / 3));
    CHECK(std::isnan(calibration_ratio({0.2}, {0})));
    CHECK_THROWS_WITH(expected_calibration_error({1.5}, {1}), Contains("prediction 0 is 1.5"));
    CHECK_THROWS_WITH(expected_calibration_error(p, y, 0), Contains("bins must be in [1, 2^20], got 0"));
    CHECK_THROWS_WITH(expected_calibration_error(p, y, Index(1) << 40), Contains("bins must be in [1, 2^20]"));
    CHECK_THROWS_WITH(expected_calibration_error({std::nan("")}, {1}), Contains("prediction 0 is nan"));
    CHECK_THROWS_WITH(expected_calibration_error({}, {}), Contains("no samples"));
    CHECK_THROWS_AS(calibration_ratio({0.1}, {0, 1}), shape_error);
    CHECK_THROWS_WITH(calibration_ratio({0.5, std::nan("")}, {0, 1}), Contains("prediction 1 is nan"));
    CHECK_THROWS_WITH(calibration_ratio({0.5, 0.2}, {0, 3}), Contains("label 1 is 3"));
}

TEST_CASE("Calibration fits refuse one class, bad labels, non-finite scores and mismatched sizes", "[calibration][errors]") {
    CHECK_THROWS_WITH(IsotonicRegression::fit({1, 2, 3}, {1, 1, 1}), Contains("one class only (3 positives of 3)"));
    CHECK_THROWS_WITH(PlattScaling::fit({1, 2}, {0, 0}), Contains("one class only (0 positives of 2)"));
    CHECK_THROWS_WITH(PlattScaling::fit({1, 2}, {0, 2}), Contains("label 1 is 2, expected 0 or 1"));
    CHECK_THROWS_WITH(IsotonicRegression::fit({1, std::nan("")}, {0, 1}), Contains("score 1 is nan"));
    CHECK_THROWS_AS(IsotonicRegression::fit({1, 2, 3}, {0, 1}), shape_error);
    CHECK_THROWS_WITH(PlattScaling::fit({}, {}), Contains("no samples"));
    CHECK_THROWS_WITH(IsotonicRegression()(0.5), Contains("not fitted"));
    // Equal scores of both classes: Platt's slope stays 0, its intercept the smoothed base rate.
    const PlattScaling flat = PlattScaling::fit({0, 0, 0, 0}, {0, 1, 1, 1});
    CHECK(flat.a == Approx(0.0).margin(1e-9));
    CHECK(flat(0) == Approx((3.0 + 1) / (3 + 2) * 3 / 4 + 1.0 / (1 + 2) / 4));
    // Scores so large that the Newton system overflows: a finite fit (it once took a NaN step),
    // and isotonic regression still orders them.
    const std::vector<double> huge{-1e200, -1e199, 1e199, 1e200}, labels{0, 0, 1, 1};
    const PlattScaling big = PlattScaling::fit(huge, labels);
    CHECK(std::isfinite(big.a));
    CHECK(std::isfinite(big.b));
    CHECK(std::isfinite(big(1e200)));
    const auto iso = IsotonicRegression::fit(huge, labels);
    CHECK(iso(-1e200) == 0.0);
    CHECK(iso(1e200) == 1.0);
}

}  // namespace test_calibration
