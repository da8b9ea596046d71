#pragma once
// The generic gradient checker, public so that users who write their own layers (core/module.hpp)
// check them the way the library checks its own: central differences in double against the
// analytic gradients.
//
//   auto r = moe::testing::check_layer(layer, store, x);   // a layer or composite with the contract
//   auto r = moe::testing::check_model(model, batch, loss); // a multi-task model through its loss
//   if (r.max_error >= 1e-6) std::cerr << r.report << "worst: " << r.worst << "\n";
//
// check_gradients(loss, probes) perturbs every value of every probe by +-h, recomputes the scalar
// loss, and compares (L(v + h) - L(v - h)) / 2h with the analytic gradient the probe carries.
// The error of a probe is max |analytic - numeric| / max(|analytic|_inf, |numeric|_inf, floor):
// relative to the tensor's scale, so a tiny entry next to large ones does not fail on round-off.
// The floor (1e-3) covers the round-off of a central difference of an O(1) loss (a few 1e-16 / h,
// up to 1e-9) under the 1e-6 the library's tests demand: a gradient that is exactly zero (a bias
// before a BatchNorm whose ReLU is active on the whole batch) must not fail on that noise.
// Everything runs in double: instantiate your layer with double to check it.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/layers/dropout.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/task.hpp"
#include "moe/tasks/multitask_loss.hpp"

namespace moe::testing {

/// Values to perturb (in place, restored afterwards) and the analytic gradient of the loss there.
struct Probe {
    std::string name;
    double* values;
    std::vector<double> grad;  // same length as the values
};

struct GradCheckResult {
    double max_error = 0.0;  ///< the largest relative error over the probes
    std::string worst;       ///< the probe and index with the largest error, both gradients
    std::string report;      ///< one line per probe with its error
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

/// A fixed random matrix with entries in [-1, 1).
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

/// Freezes the masks of every Dropout (the checker needs the same mask for every evaluation).
template <class Module>
void freeze_dropout(Module& module) {
    for_each_dropout(module, [](Dropout<double>& d) { d.freeze_mask(true); });
}

/// Gradient check of a layer or composite with the module contract on input x (features x batch):
/// the loss is sum(R .* forward(x)) (+ aux_loss() when the layer has one) for a fixed random R, so
/// backward(R) gives the analytic gradients of the input and of every parameter. The parameters must
/// be bound (Model<> or a ParameterStore); gradients are zeroed here. Freeze dropout masks first
/// (freeze_dropout).
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
    auto loss = [&] {
        double v = layer.forward(x).cwiseProduct(r).sum();
        if constexpr (detail::has_aux_loss<Layer>::value) v += layer.aux_loss();
        return v;
    };
    return check_gradients(loss, probes);
}

/// Labels T x B for any tasks: binary 0/1, regression in [0, 2), class indices.
inline Matrix<double> labels_for(const std::vector<TaskSpec>& tasks, Index batch, std::uint64_t seed) {
    Rng rng(seed);
    Matrix<double> y(static_cast<Index>(tasks.size()), batch);
    for (std::size_t t = 0; t < tasks.size(); ++t)
        for (Index b = 0; b < batch; ++b) {
            const auto ti = static_cast<Index>(t);
            switch (tasks[t].kind) {
                case TaskKind::binary: y(ti, b) = double(rng.below(2)); break;
                case TaskKind::regression: y(ti, b) = rng.uniform(0.0, 2.0); break;
                case TaskKind::multiclass: y(ti, b) = double(rng.below(static_cast<std::uint64_t>(tasks[t].classes))); break;
            }
        }
    return y;
}

/// Gradient check of a whole multi-task model (a Model<M> in double) through a MultiTaskLoss on a
/// random batch with random labels, optionally masked (mask: T x B or empty), in training mode with
/// dropout masks frozen. The model's aux losses (aux_loss(), e.g. a gate's regulariser) are part of
/// the checked objective when it has them. A tower tree (spec.surfaces > 1) needs each sample's surface.
template <class M>
GradCheckResult check_model(M& model, Index batch, MultiTaskLoss<double>& loss, const Matrix<double>& mask = {},
                            const SurfaceIds& surfaces = {}) {
    Matrix<double> x = random_matrix(model.in_features(), batch, 11);
    const Matrix<double> y = labels_for(model.tasks(), batch, 12);
    model.train();
    freeze_dropout(model);
    auto f = [&] {
        double total = loss.forward(surfaces.given() ? model.forward(x, surfaces) : model.forward(x), y, mask);
        if constexpr (detail::has_aux_loss<M>::value) total += model.aux_loss();
        return total;
    };
    model.zero_grad();
    f();
    const Matrix<double> dx = model.backward(loss.backward(), true);
    std::vector<Probe> probes;
    probes.push_back({"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())});
    add_parameter_probes(model, probes);
    return check_gradients(f, probes);
}

}  // namespace moe::testing
