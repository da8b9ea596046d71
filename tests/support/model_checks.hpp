#pragma once
// Shared by the model tests: labels and masks for any tasks, and the gradient check of a whole
// model through a MultiTaskLoss.
#include <vector>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"

namespace moe::testing {

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
/// A T x B mask that hides every third sample of task 1 and every other one of task 3.
inline Matrix<double> mask_for(Index tasks, Index batch) {
    Matrix<double> m = Matrix<double>::Ones(tasks, batch);
    for (Index b = 0; b < batch; b += 3) m(1, b) = 0;
    if (tasks > 3)
        for (Index b = 1; b < batch; b += 2) m(3, b) = 0;
    return m;
}

/// Gradient check of a whole model through a MultiTaskLoss, in training mode, dropout masks frozen.
template <class M>
double gradcheck_model(Model<M>& model, Index batch, MultiTaskLoss<double>& loss, bool masked) {
    const Index n_tasks = static_cast<Index>(model.tasks().size());
    Matrix<double> x = random_matrix(model.in_features(), batch, 11);
    const Matrix<double> y = labels_for(model.tasks(), batch, 12);
    const Matrix<double> mask = masked ? mask_for(n_tasks, batch) : Matrix<double>();
    model.train();
    model.for_each_dropout([](Dropout<double>& d) { d.freeze_mask(true); });
    auto f = [&] { return loss.forward(model.forward(x), y, mask); };
    model.zero_grad();
    f();
    const Matrix<double> dx = model.backward(loss.backward(), true);
    std::vector<Probe> probes;
    probes.push_back({"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())});
    moe::testing::add_parameter_probes(model, probes);
    auto r = check_gradients(f, probes);
    if (r.max_error >= 1e-6) UNSCOPED_INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}

}  // namespace moe::testing
