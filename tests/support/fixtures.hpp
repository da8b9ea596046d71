#pragma once
// Loading the committed PyTorch reference cases and comparing against them.
#include <string>

#include "moe/moe.hpp"
#include "support/catch.hpp"

namespace moe::testing {

inline std::string fixture_path(const std::string& name) { return std::string(MOE_FIXTURE_DIR) + "/" + name; }

template <class T>
constexpr double parity_tolerance() {
    return std::is_same_v<T, double> ? 1e-9 : 2e-4;
}

/// max |a - b| relative to the larger magnitude of the expected tensor (at least 1).
template <class A, class B>
double relative_difference(const A& actual, const B& expected) {
    if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) return 1e300;
    const double scale = std::max(1.0, static_cast<double>(expected.cwiseAbs().maxCoeff()));
    return static_cast<double>((actual - expected).cwiseAbs().maxCoeff()) / scale;
}

}  // namespace moe::testing

/// CHECK that a matrix matches a reference within the parity tolerance of its scalar type.
#define MOE_CHECK_CLOSE(actual, expected, T)                                                   \
    do {                                                                                       \
        const auto moe_a_ = (actual).template cast<T>().eval();                                \
        const auto moe_e_ = (expected).template cast<T>().eval();                              \
        INFO(#actual << " vs " << #expected << ": shapes " << moe_a_.rows() << "x" << moe_a_.cols() \
                     << " and " << moe_e_.rows() << "x" << moe_e_.cols());                     \
        CHECK(moe::testing::relative_difference(moe_a_, moe_e_) <= moe::testing::parity_tolerance<T>()); \
    } while (0)
