#pragma once
// A seeded random number generator whose draws are the same on every platform and standard
// library: std::uniform_real_distribution and std::normal_distribution are implementation-defined,
// so the conversions from raw 64-bit draws are written out here.
#include <cmath>
#include <cstdint>
#include <random>

namespace moe {

/// Seeded RNG (mt19937_64) with platform-independent uniform and normal draws.
class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}

    /// Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
    /// Uniform in [lo, hi).
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u1 = 0.0;
        while (u1 <= 0.0) u1 = uniform();
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        const double two_pi = 6.283185307179586476925286766559;
        spare_ = r * std::sin(two_pi * u2);
        has_spare_ = true;
        return r * std::cos(two_pi * u2);
    }
    /// Uniform integer in [0, n).
    std::uint64_t below(std::uint64_t n) {
        // Rejection keeps it unbiased; the loop almost never repeats.
        const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
        std::uint64_t r;
        do r = engine_(); while (r >= limit);
        return r % n;
    }
    /// A seed for a child generator (one per layer), derived deterministically.
    std::uint64_t split() { return engine_() ^ 0x9E3779B97F4A7C15ull; }

    std::mt19937_64& engine() { return engine_; }

private:
    std::mt19937_64 engine_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

/// Fisher-Yates shuffle of [first, last) with an Rng (std::shuffle's draws are implementation-defined).
template <class It>
void shuffle(It first, It last, Rng& rng) {
    const auto n = last - first;
    for (auto i = n - 1; i > 0; --i) {
        const auto j = static_cast<decltype(i)>(rng.below(static_cast<std::uint64_t>(i) + 1));
        std::swap(first[i], first[j]);
    }
}

}  // namespace moe
