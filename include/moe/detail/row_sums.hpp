#pragma once
// Sums over the batch of a features x B matrix, for bias and batchnorm gradients.
//
// Eigen's m.rowwise().sum() on a column-major matrix measured 4-5x slower than adding the columns
// one after another (122 us against 24 us for 2048 x 256 floats): the column loop streams memory
// in order and vectorises over the features.
#include "moe/core/view.hpp"

namespace moe::detail {

/// acc += sum over columns j of m.col(j). acc has m.rows() entries.
template <class T, class Acc>
void add_row_sums(const ConstView<T>& m, Acc&& acc) {
    for (Index j = 0; j < m.cols(); ++j) acc += m.col(j);
}

/// acc += sum over columns j of a.col(j) .* b.col(j).
template <class T, class Acc>
void add_row_dots(const ConstView<T>& a, const ConstView<T>& b, Acc&& acc) {
    for (Index j = 0; j < a.cols(); ++j) acc += a.col(j).cwiseProduct(b.col(j));
}

}  // namespace moe::detail
