#pragma once
// The generic gradient checker: central differences in double against the analytic gradients.
//
// check_gradients(loss, probes) perturbs every value of every probe by +-h, recomputes the scalar
// loss, and compares (L(v + h) - L(v - h)) / 2h with the analytic gradient the probe carries.
// The error of a probe is max |analytic - numeric| / max(|analytic|_inf, |numeric|_inf, floor):
// relative to the tensor's scale, so a tiny entry next to large ones does not fail on round-off.
// The floor (1e-3) covers the round-off of a central difference of an O(1) loss (a few 1e-16 / h,
// up to 1e-9) under the 1e-6 we demand: a gradient that is exactly zero (a bias before a BatchNorm
// whose ReLU is active on the whole batch) must not fail on that noise.
//
// check_layer(layer, x) applies it to any layer or model with the layer contract: the loss is
// sum(R .* forward(x)) for a fixed random R, so backward(R) gives the analytic gradients of the input
// and of every parameter the layer lists.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "moe/moe.hpp"

namespace moe::testing {

struct Probe {
    std::string name;
    double* values;            // perturbed in place, restored afterwards
    std::vector<double> grad;  // analytic gradient, same length
};

struct GradCheckResult {
    double max_error = 0.0;
    std::string worst;  // the probe (and index) with the largest error
    std::string report;
};

inline GradCheckResult check_gradients(const std::function<double()>& loss, std::vector<Probe>& probes,
                                       double h = 1e-6, double floor = 1e-3) {
    GradCheckResult r;
    for (auto& p : probes) {
        const std::size_t n = p.grad.size();
        std::vector<double> numeric(n);
        for (std::size_t i = 0; i < n; ++i) {
            const double v = p.values[i];
            p.values[i] = v + h;
            const double up = loss();
            p.values[i] = v - h;
            const double down = loss();
            p.values[i] = v;
            numeric[i] = (up - down) / (2 * h);
        }
        double scale = floor, worst = 0.0;
        std::size_t worst_i = 0;
        for (std::size_t i = 0; i < n; ++i) scale = std::max({scale, std::abs(numeric[i]), std::abs(p.grad[i])});
        for (std::size_t i = 0; i < n; ++i) {
            const double e = std::abs(numeric[i] - p.grad[i]);
            if (e > worst) worst = e, worst_i = i;
        }
        const double rel = worst / scale;
        r.report += p.name + ": " + std::to_string(rel) + "\n";
        if (rel >= r.max_error && n > 0) {
            r.max_error = rel;
            r.worst = p.name + "[" + std::to_string(worst_i) + "] analytic " + std::to_string(p.grad[worst_i]) +
                      " numeric " + std::to_string(numeric[worst_i]);
        }
    }
    return r;
}

/// Fixed random matrix with entries in [-1, 1).
inline Matrix<double> random_matrix(Index rows, Index cols, std::uint64_t seed) {
    Rng rng(seed);
    Matrix<double> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = rng.uniform(-1.0, 1.0);
    return m;
}

/// Probes for every parameter the module lists, with the gradients currently in the store.
template <class Module>
void add_parameter_probes(Module& module, std::vector<Probe>& probes) {
    module.for_each_parameter("", [&](const std::string& name, Param<double>& p) {
        probes.push_back({name, p.value.data(), std::vector<double>(p.grad.data(), p.grad.data() + p.size())});
    });
}

/// Gradient check of a layer or model with the layer contract on input x (features x batch).
/// The layer's parameters must be bound (Model<> or a ParameterStore) and gradients are zeroed here.
template <class Layer>
GradCheckResult check_layer(Layer& layer, ParameterStore<double>& store, Matrix<double> x, std::uint64_t seed = 7) {
    const Matrix<double> y0 = layer.forward(x);
    const Matrix<double> r = random_matrix(y0.rows(), y0.cols(), seed);
    store.zero_grad();
    layer.forward(x);
    const Matrix<double> dx = layer.backward(r);
    std::vector<Probe> probes;
    probes.push_back({"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())});
    add_parameter_probes(layer, probes);
    auto loss = [&] { return layer.forward(x).cwiseProduct(r).sum(); };
    return check_gradients(loss, probes);
}

}  // namespace moe::testing
