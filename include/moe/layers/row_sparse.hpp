#pragma once
// Row-sparse gradients of embedding tables: only the rows a batch touched, duplicates summed.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The gradient of a table as the rows a batch touched: `rows` sorted and unique, and column j of
/// `values` (dim x rows.size()) the gradient of row rows[j] (duplicates in the batch summed).
template <class T>
struct RowSparseGrad {
    std::vector<std::int64_t> rows;
    Buffer<T> values;
};

namespace detail {

/// padding_idx of a table of `rows` rows, negative counted from the end (as PyTorch), checked.
inline std::optional<std::int64_t> padding_row(std::optional<std::int64_t> padding_idx, Index rows,
                                               const std::string& layer) {
    if (!padding_idx) return std::nullopt;
    const std::int64_t p = *padding_idx < 0 ? *padding_idx + rows : *padding_idx;
    require(p >= 0 && p < rows, layer, ": padding_idx ", *padding_idx, " is outside the table of ", rows, " rows");
    return p;
}

/// Sorts positions of ids by id, stably, keeping its scratch for the next batch (a layer holds one,
/// so that its steps allocate nothing). A least-significant-digit radix sort, 11 bits per pass and
/// only as many passes as the largest id needs: a step's ids are sorted in a few linear passes
/// instead of n log n indirect comparisons (which were most of a sparse step's instructions).
class IdSorter {
public:
    /// Sorts `order` (positions into ids, increasing) by id; equal ids keep their order, so the
    /// result is in (id, position) order.
    void sort(const std::vector<std::int64_t>& ids, std::vector<std::int64_t>& order) {
        const std::size_t n = order.size();
        if (n < kRadixFrom) {
            std::sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) {
                const std::int64_t ix = ids[std::size_t(x)], iy = ids[std::size_t(y)];
                return ix != iy ? ix < iy : x < y;
            });
            return;
        }
        keys_.resize(n);
        keys2_.resize(n);
        order2_.resize(n);
        count_.resize(kBuckets);
        std::uint64_t all_bits = 0;
        for (std::size_t i = 0; i < n; ++i) {
            keys_[i] = std::uint64_t(ids[std::size_t(order[i])]);  // ids are >= 0 (checked)
            all_bits |= keys_[i];
        }
        for (unsigned shift = 0; shift < 64 && (all_bits >> shift) != 0; shift += kBits) {
            std::fill(count_.begin(), count_.end(), std::size_t(0));
            for (std::size_t i = 0; i < n; ++i) ++count_[(keys_[i] >> shift) & kMask];
            std::size_t start = 0;
            for (std::size_t& c : count_) start += std::exchange(c, start);
            for (std::size_t i = 0; i < n; ++i) {
                const std::size_t to = count_[(keys_[i] >> shift) & kMask]++;
                keys2_[to] = keys_[i];
                order2_[to] = order[i];
            }
            keys_.swap(keys2_);
            order.swap(order2_);
        }
    }

private:
    static constexpr unsigned kBits = 11;
    static constexpr std::size_t kBuckets = std::size_t(1) << kBits, kMask = kBuckets - 1, kRadixFrom = 256;
    std::vector<std::uint64_t> keys_, keys2_;
    std::vector<std::int64_t> order2_;
    std::vector<std::size_t> count_;
};

/// Prepares `grad` for the positions in `order` (positions of `ids` that get a gradient, increasing):
/// sorts them by (id, position), sets grad.rows to their ids (sorted, unique), slot_of[p] to the
/// column of position p's row, and zeroes grad.values (dim x rows). Summing over `order` afterwards
/// adds every row's parts in batch order: the same bits every run, whatever the threads.
template <class T>
void plan_row_gradients(const std::vector<std::int64_t>& ids, std::vector<std::int64_t>& order, IdSorter& sorter,
                        std::vector<Index>& slot_of, Index dim, RowSparseGrad<T>& grad) {
    sorter.sort(ids, order);
    // Room for as many rows as positions: batches of the same size with other ids (more distinct
    // rows) then allocate nothing.
    grad.rows.clear();
    grad.rows.reserve(order.size());
    grad.values.reserve(dim * Index(order.size()));
    slot_of.resize(ids.size());
    for (const std::int64_t p : order) {
        const std::int64_t id = ids[std::size_t(p)];
        if (grad.rows.empty() || grad.rows.back() != id) grad.rows.push_back(id);
        slot_of[std::size_t(p)] = Index(grad.rows.size()) - 1;
    }
    grad.values.zeros(dim, Index(grad.rows.size()));
}

/// Checks a row-sparse gradient against a table (dim x rows) before an optimizer step: the table's
/// shape, the gradient's shape, rows inside the table and increasing. Names `where`.
template <class T>
void check_row_sparse_grad(const Matrix<T>& table, const RowSparseGrad<T>& g, Index rows, Index dim, const char* where) {
    require(table.rows() == dim && table.cols() == rows, where, ": the table is ", table.rows(), " x ", table.cols(),
            ", the optimizer's state is for ", dim, " x ", rows);
    const auto& gv = g.values.view();
    require(gv.rows() == dim && gv.cols() == Index(g.rows.size()), where, ": ", g.rows.size(), " rows with gradients of ",
            gv.rows(), " x ", gv.cols());
    for (std::size_t j = 0; j < g.rows.size(); ++j)
        require(g.rows[j] >= 0 && g.rows[j] < rows && (j == 0 || g.rows[j] > g.rows[j - 1]), where, ": gradient row ",
                g.rows[j], " (entry ", j, ") is outside the table or not in increasing order");
}

}  // namespace detail
}  // namespace moe
