#pragma once
// Shared by the model tests: a label mask, and the gradient check of a whole model through a
// MultiTaskLoss (moe::testing::check_model) reported to Catch.
#include <vector>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"

namespace moe::testing {

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
    const Matrix<double> mask = masked ? mask_for(static_cast<Index>(model.tasks().size()), batch) : Matrix<double>();
    const auto r = check_model(model, batch, loss, mask);
    if (r.max_error >= 1e-6) UNSCOPED_INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}

}  // namespace moe::testing
