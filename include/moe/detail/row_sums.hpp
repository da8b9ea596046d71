#pragma once
// Sums over the batch of a features x B matrix, for bias and batchnorm gradients.
//
// Eigen's m.rowwise().sum() on a column-major matrix measured 4-5x slower than adding the columns
// one after another (122 us against 24 us for 2048 x 256 floats): the column loop streams memory
// in order and vectorises over the features.
#include <algorithm>

#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"

namespace moe::detail {

/// Samples per partial sum of add_row_sums: each block of the batch is summed on its own, then the
/// blocks' sums are added in order. MLP's blocked training pass sums each block of an output
/// gradient while it is in cache (sum_columns) and adds the sums in the same order: same bits.
constexpr Index kRowSumBlock = 128;

/// out = the sum of columns [c0, c1) of rows [r0, r1) of m, in column order (c1 > c0).
template <class T>
void sum_columns(const ConstView<T>& m, Index r0, Index r1, Index c0, Index c1, T* out) {
    Eigen::Map<Vector<T>> o(out, r1 - r0);
    o = m.col(c0).segment(r0, r1 - r0);
    for (Index j = c0 + 1; j < c1; ++j) o += m.col(j).segment(r0, r1 - r0);
}

/// Rows per strip of add_row_sums: a strip's block sums live on the stack, not in a per-thread
/// buffer that each thread would grow on its first use (a first small step after blocked ones
/// allocated it: docs/design.md, "No allocation in steady state").
constexpr Index kRowSumStrip = 512;

/// acc += sum over columns j of m.col(j), as the sums of blocks of kRowSumBlock columns added in
/// block order. acc has m.rows() entries. Ranges of features over the threads when the batch pays
/// for it (for_each_range), each range in strips of kRowSumStrip features; every feature is summed
/// in the same order whatever the cut, so the bits do not depend on the threads.
template <class T, class Acc>
void add_row_sums(const ConstView<T>& m, Acc&& acc) {
    for_each_range(m.rows(), kElementwiseFlops * double(m.size()), [&](Index r0, Index r1) {
        for (Index s0 = r0; s0 < r1; s0 += kRowSumStrip) {
            const Index s1 = std::min(r1, s0 + kRowSumStrip);
            alignas(64) T part[kRowSumStrip];
            auto a = acc.segment(s0, s1 - s0);
            for (Index c0 = 0; c0 < m.cols(); c0 += kRowSumBlock) {
                sum_columns(m, s0, s1, c0, std::min(m.cols(), c0 + kRowSumBlock), part);
                a += Eigen::Map<const Vector<T>>(part, s1 - s0);
            }
        }
    });
}

/// acc += sum over columns j of a.col(j) .* b.col(j). Features in blocks of 512, a fixed cut
/// (a multiply-add may round differently in a vectorised body and in a scalar tail, so the cut must
/// not follow the threads): blocks over the threads when the batch pays for it; on one thread, per
/// column block after block, streaming memory in order with the same arithmetic.
template <class T, class Acc>
void add_row_dots(const ConstView<T>& a, const ConstView<T>& b, Acc&& acc) {
    constexpr Index kBlock = 512;
    const Index rows = a.rows(), blocks = (rows + kBlock - 1) / kBlock;
    const double flops = 2 * kElementwiseFlops * double(a.size());
    auto dot_block = [&](Index j, Index r0, Index r1) {
        acc.segment(r0, r1 - r0) += a.col(j).segment(r0, r1 - r0).cwiseProduct(b.col(j).segment(r0, r1 - r0));
    };
    if (threads_for(flops, blocks) <= 1) {
        for (Index j = 0; j < a.cols(); ++j)
            for (Index r0 = 0; r0 < rows; r0 += kBlock) dot_block(j, r0, std::min(rows, r0 + kBlock));
        return;
    }
    parallel_for(rows, kBlock, flops, [&](Index r0, Index r1) {
        for (Index j = 0; j < a.cols(); ++j) dot_block(j, r0, r1);
    });
}

}  // namespace moe::detail
