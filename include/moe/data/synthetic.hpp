#pragma once
// The MMoE paper's synthetic data with a controlled task correlation (Ma et al., KDD 2018, 4.2).
//
//   u1, u2 orthonormal in R^d;  w1 = c u1,  w2 = c (p u1 + sqrt(1 - p^2) u2);  x ~ N(0, I_d)
//   y_k = w_k . x + sum_{i=1..m} sin(alpha_i w_k . x + beta_i) + eps,  eps ~ N(0, noise^2)
//
// cos(w1, w2) = p; the labels' Pearson correlation grows with p but is not p (the sines). The paper
// leaves c, m, alpha and beta open; two published presets are offered (SyntheticPreset). The default
// is random_sines: with fixed_sines (frequencies 1..10) the ten sines are, for models of the paper's
// sizes, noise of variance ~5 on top of the linear part, and every model's test loss stays near the
// label variance (~6): the comparison the experiment is about does not show.
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/train/dataset.hpp"

namespace moe {

/// alpha_i, beta_i ~ N(0, 1) drawn from the seed (the default), or alpha_i = i and beta_i = (i - 1)^2.
enum class SyntheticPreset { random_sines, fixed_sines };

struct SyntheticOptions {
    Index samples = 10000;
    Index dim = 100;           ///< d
    double correlation = 0.5;  ///< p, in [-1, 1]
    double c = 1.0;            ///< scale of the weight vectors
    Index sines = 10;          ///< m
    SyntheticPreset preset = SyntheticPreset::random_sines;
    double noise = 0.01;       ///< standard deviation of eps
    std::uint64_t seed = 0;    ///< the weights, alpha and beta (all draws of a data set)
    /// When set, alpha and beta (random_sines) are drawn from this seed instead of `seed`: the sines
    /// stay fixed across data sets whose weights and samples differ, as in the paper's runs.
    std::optional<std::uint64_t> sines_seed;
    std::uint64_t sample_seed = 1;  ///< x and eps: the same seed with another sample_seed gives a test set of the same tasks
};

/// Two regression tasks ("t1", "t2") on x (dim x samples): labels 2 x samples.
template <class T>
MultiTaskData<T> make_synthetic_tasks(const SyntheticOptions& o) {
    detail::require(o.samples > 0 && o.dim >= 2, "moe::make_synthetic_tasks: needs samples > 0 and dim >= 2, got ",
                    o.samples, " and ", o.dim);
    detail::require(o.correlation >= -1.0 && o.correlation <= 1.0, "moe::make_synthetic_tasks: correlation must be in "
                    "[-1, 1], got ", o.correlation);
    detail::require(o.sines >= 0 && o.noise >= 0 && std::isfinite(o.c), "moe::make_synthetic_tasks: needs sines >= 0, "
                    "noise >= 0 and a finite c, got ", o.sines, ", ", o.noise, ", ", o.c);
    Rng rng(o.seed);
    // Orthonormal u1, u2: Gram-Schmidt on two Gaussian vectors.
    Vector<double> u1(o.dim), u2(o.dim);
    for (Index i = 0; i < o.dim; ++i) u1(i) = rng.normal();
    for (Index i = 0; i < o.dim; ++i) u2(i) = rng.normal();
    u1.normalize();
    u2 -= u2.dot(u1) * u1;
    u2.normalize();
    const Vector<double> w1 = o.c * u1;
    const Vector<double> w2 = o.c * (o.correlation * u1 + std::sqrt(1.0 - o.correlation * o.correlation) * u2);
    std::vector<double> alpha(static_cast<std::size_t>(o.sines)), beta(alpha.size());
    Rng sines_rng(o.sines_seed.value_or(0));
    Rng& sine_draw = o.sines_seed ? sines_rng : rng;
    for (std::size_t i = 0; i < alpha.size(); ++i) {
        if (o.preset == SyntheticPreset::fixed_sines) {
            alpha[i] = double(i + 1);
            beta[i] = double(i) * double(i);
        } else {
            alpha[i] = sine_draw.normal();
            beta[i] = sine_draw.normal();
        }
    }
    Rng draw(o.sample_seed);
    MultiTaskData<T> d;
    d.x.resize(o.dim, o.samples);
    d.labels.resize(2, o.samples);
    Vector<double> x(o.dim);
    for (Index j = 0; j < o.samples; ++j) {
        for (Index i = 0; i < o.dim; ++i) x(i) = draw.normal();
        d.x.col(j) = x.cast<T>();
        for (Index k = 0; k < 2; ++k) {
            const double z = (k == 0 ? w1 : w2).dot(x);
            double y = z;
            for (std::size_t i = 0; i < alpha.size(); ++i) y += std::sin(alpha[i] * z + beta[i]);
            d.labels(k, j) = static_cast<T>(y + o.noise * draw.normal());
        }
    }
    return d;
}

/// The two tasks of make_synthetic_tasks.
inline std::vector<TaskSpec> synthetic_tasks() { return {regression_task("t1"), regression_task("t2")}; }

}  // namespace moe
