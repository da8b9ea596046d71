#pragma once
// EmbeddingBag: a table of ID embeddings, pooled per bag of ids, with torch.nn.EmbeddingBag's
// semantics and a row-sparse gradient (only the rows a batch touched, never a table-sized one).
//
// Layout: the table is dim x rows, column-major, so row r of PyTorch's weight (rows x dim,
// row-major) is column r here and the bytes are the same. Outputs are dim x bags, as every layer's
// features x batch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/table_memory.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"
#include "moe/layers/row_sparse.hpp"

namespace moe {

/// How a bag's embeddings are pooled (torch.nn.EmbeddingBag's mode).
enum class PoolingMode { sum, mean, max };

inline const char* to_string(PoolingMode m) {
    return m == PoolingMode::sum ? "sum" : m == PoolingMode::mean ? "mean" : "max";
}
inline PoolingMode pooling_mode_from_string(const std::string& s) {
    if (s == "sum") return PoolingMode::sum;
    if (s == "mean") return PoolingMode::mean;
    if (s == "max") return PoolingMode::max;
    throw config_error("unknown pooling mode '" + s + "' (expected sum, mean or max)");
}

/// A batch of bags of ids, PyTorch's flat form with include_last_offset=True: bag b holds
/// ids[offsets[b]], ..., ids[offsets[b + 1] - 1], so offsets has bags + 1 entries, offsets[0] = 0
/// and offsets[bags] = ids.size(); a bag may be empty. `weights` is empty or holds one weight per id
/// (per_sample_weights: mode sum only).
template <class T>
struct Bags {
    std::vector<std::int64_t> ids;
    std::vector<std::int64_t> offsets{0};
    std::vector<T> weights;

    Index size() const { return offsets.empty() ? 0 : Index(offsets.size()) - 1; }

    /// Bags from their lengths: bag b is the next lengths[b] ids.
    static Bags from_lengths(std::vector<std::int64_t> ids, const std::vector<std::int64_t>& lengths,
                             std::vector<T> weights = {}) {
        Bags b;
        b.ids = std::move(ids);
        b.weights = std::move(weights);
        b.offsets.assign(1, 0);
        for (std::size_t i = 0; i < lengths.size(); ++i) {
            if (lengths[i] < 0)
                throw config_error(detail::concat("Bags::from_lengths: length ", i, " is ", lengths[i], ", negative"));
            // Compared before adding: lengths near 2^63 must not overflow the sum.
            if (lengths[i] > std::int64_t(b.ids.size()) - b.offsets.back())
                throw config_error(detail::concat("Bags::from_lengths: the lengths up to length ", i, " (", lengths[i],
                                                  ") sum to more than the ", b.ids.size(), " ids"));
            b.offsets.push_back(b.offsets.back() + lengths[i]);
        }
        if (b.offsets.back() != std::int64_t(b.ids.size()))
            throw config_error(detail::concat("Bags::from_lengths: the lengths sum to ", b.offsets.back(), " but there are ",
                                              b.ids.size(), " ids"));
        return b;
    }
};

namespace detail {

/// The pooling of bags of ids over a table (dim x rows), and its backward: what an EmbeddingBag
/// does apart from owning the table. FeatureInput keeps one per feature, so that features sharing a
/// table pool it their own way and keep their own state for backward.
template <class T>
class BagPooling {
public:
    /// padding: a row already resolved by padding_row(), or none. `name` is used in errors.
    BagPooling(PoolingMode mode, std::optional<std::int64_t> padding, std::string name)
        : name_(std::move(name)), mode_(mode), padding_(padding) {}

    const std::string& name() const { return name_; }
    PoolingMode mode() const { return mode_; }
    std::optional<std::int64_t> padding_idx() const { return padding_; }
    /// The gradient of the last backward.
    const RowSparseGrad<T>& grad() const { return grad_; }
    /// Ids in the bags of the last forward.
    Index ids() const { return bags_ ? Index(bags_->ids.size()) : 0; }

    /// Checks offsets, ids (against a table of `rows` rows) and weights; throws naming the layer.
    void check(const Bags<T>& bags, Index rows) const {
        const auto& off = bags.offsets;
        require(!off.empty() && off.front() == 0, name_, ": offsets must start with 0 (", off.size(), " offsets given)");
        for (std::size_t b = 1; b < off.size(); ++b)
            require(off[b] >= off[b - 1], name_, ": offsets must not decrease, but offsets[", b, "] = ", off[b], " < offsets[",
                    b - 1, "] = ", off[b - 1]);
        require(off.back() == std::int64_t(bags.ids.size()), name_, ": the last offset is ", off.back(), " but there are ",
                bags.ids.size(), " ids");
        for (std::size_t p = 0; p < bags.ids.size(); ++p)
            require(bags.ids[p] >= 0 && bags.ids[p] < rows, name_, ": id ", bags.ids[p], " at position ", p,
                    " is outside the table of ", rows, " rows");
        if (bags.weights.empty()) return;
        require(mode_ == PoolingMode::sum, name_, ": per-id weights need mode sum, the mode is ", to_string(mode_));
        require(bags.weights.size() == bags.ids.size(), name_, ": ", bags.weights.size(), " weights for ", bags.ids.size(),
                " ids");
        for (std::size_t p = 0; p < bags.weights.size(); ++p)
            require(std::isfinite(double(bags.weights[p])), name_, ": the weight of id ", bags.ids[p], " at position ", p,
                    " is ", bags.weights[p]);
    }

    /// Training forward of checked bags into y (dim x bags, any column-major block); keeps a
    /// pointer to `bags` (alive and unchanged until backward) and, in max mode, the argmax.
    template <class Out>
    void forward(const Matrix<T>& table, const Bags<T>& bags, Out&& y) {
        pool(table, bags, y, mode_ == PoolingMode::max ? &argmax_ : nullptr);
        bags_ = &bags;
    }

    /// Pools checked bags into y (dim x bags); in max mode, argmax (when given) gets per (bag, dim)
    /// the position of the maximum, -1 for an empty bag.
    template <class Out>
    void pool(const Matrix<T>& table, const Bags<T>& bags, Out&& y, std::vector<std::int64_t>* argmax) const {
        const Index n = bags.size(), d = table.rows();
        y.setZero();
        if (argmax) argmax->assign(std::size_t(d * n), -1);
        for (Index b = 0; b < n; ++b) {
            Index count = 0;
            for (std::int64_t p = bags.offsets[std::size_t(b)]; p < bags.offsets[std::size_t(b) + 1]; ++p) {
                if (std::size_t(p) + kPrefetchAhead < bags.ids.size())
                    prefetch_values(table.data() + bags.ids[std::size_t(p) + kPrefetchAhead] * d, d);
                const std::int64_t id = bags.ids[std::size_t(p)];
                if (padding_ && id == *padding_) continue;
                const auto row = table.col(Index(id));
                if (mode_ != PoolingMode::max)
                    y.col(b) += (bags.weights.empty() ? T(1) : bags.weights[std::size_t(p)]) * row;
                else
                    for (Index i = 0; i < d; ++i)
                        if (count == 0 || row(i) > y(i, b)) {  // the first maximum wins, as in PyTorch
                            y(i, b) = row(i);
                            if (argmax) (*argmax)[std::size_t(b * d + i)] = p;
                        }
                ++count;
            }
            if (mode_ == PoolingMode::mean && count > 0) y.col(b) /= T(count);
        }
    }

    /// The row-sparse gradient of a table of `dim` for dy (dim x bags of the last forward). Rows
    /// are summed in id order, each over the batch in bag order: the same bits every run.
    const RowSparseGrad<T>& backward(Index dim, const ConstView<T>& dy) {
        require(bags_ != nullptr, name_, "::backward: no forward before it");
        const Bags<T>& bags = *bags_;
        const Index n = bags.size(), d = dim;
        check_shape(dy, d, n, name_, "backward", "output gradient");
        // Positions of the ids that count, sorted by (id, position); bag_of_ maps a position to its bag.
        order_.clear();
        bag_of_.resize(bags.ids.size());
        count_.assign(std::size_t(n), 0);
        for (Index b = 0; b < n; ++b)
            for (std::int64_t p = bags.offsets[std::size_t(b)]; p < bags.offsets[std::size_t(b) + 1]; ++p) {
                bag_of_[std::size_t(p)] = b;
                if (padding_ && bags.ids[std::size_t(p)] == *padding_) continue;
                order_.push_back(p);
                ++count_[std::size_t(b)];
            }
        plan_row_gradients(bags.ids, order_, sorter_, slot_of_, d, grad_);
        auto& g = grad_.values.view();
        if (mode_ == PoolingMode::max) {
            for (Index b = 0; b < n; ++b)
                for (Index i = 0; i < d; ++i)
                    if (const std::int64_t p = argmax_[std::size_t(b * d + i)]; p >= 0) g(i, slot_of_[std::size_t(p)]) += dy(i, b);
            return grad_;
        }
        for (const std::int64_t p : order_) {
            const Index b = bag_of_[std::size_t(p)];
            T scale = bags.weights.empty() ? T(1) : bags.weights[std::size_t(p)];
            if (mode_ == PoolingMode::mean) scale /= T(count_[std::size_t(b)]);
            g.col(slot_of_[std::size_t(p)]) += scale * dy.col(b);
        }
        return grad_;
    }

private:
    std::string name_;
    PoolingMode mode_;
    std::optional<std::int64_t> padding_;
    const Bags<T>* bags_ = nullptr;
    std::vector<std::int64_t> argmax_;  // max mode: per (bag, dim) the position of the maximum, -1 if none
    std::vector<std::int64_t> order_;
    IdSorter sorter_;
    std::vector<Index> bag_of_, slot_of_, count_;
    RowSparseGrad<T> grad_;
};

}  // namespace detail

/// A table of `rows` embeddings of size `dim`, pooled per bag: sum (optionally weighted per id),
/// mean or max per dimension, as torch.nn.EmbeddingBag. Ids equal to padding_idx are left out of
/// every bag (not counted by mean, never the max, no gradient) and that row starts at zero; an empty
/// bag gives zeros. max sends each dimension's gradient to the first id holding the maximum.
/// Shapes: forward(bags) is dim x bags.size(); backward(dy) takes dim x bags and returns the
/// row-sparse gradient of the table. The per-id weights get no gradient (they are inputs).
template <class T>
class EmbeddingBag {
public:
    using Scalar = T;

    EmbeddingBag(Index rows, Index dim, PoolingMode mode = PoolingMode::mean,
                 std::optional<std::int64_t> padding_idx = std::nullopt, std::string name = "moe::EmbeddingBag")
        : pooling_(mode, resolved_padding(rows, dim, padding_idx, name), name) {
        table_ = detail::table_matrix<T>(dim, rows, T(0));
    }

    const std::string& name() const { return pooling_.name(); }
    Index rows() const { return table_.cols(); }
    Index dim() const { return table_.rows(); }
    PoolingMode mode() const { return pooling_.mode(); }
    std::optional<std::int64_t> padding_idx() const { return pooling_.padding_idx(); }
    /// The table, dim x rows (PyTorch's weight, rows x dim row-major, byte for byte).
    Matrix<T>& table() { return table_; }
    const Matrix<T>& table() const { return table_; }

    /// N(0, 1) as PyTorch, the padding row zero.
    void reset_parameters(Rng& rng) {
        for (Index i = 0; i < table_.size(); ++i) table_.data()[i] = T(rng.normal());
        if (const auto p = padding_idx()) table_.col(Index(*p)).setZero();
    }

    /// Checks every id, offset and weight first (an error names the layer and the value, and changes
    /// nothing). Keeps a pointer to `bags`: it must stay alive and unchanged until backward.
    const MatrixView<T>& forward(const Bags<T>& bags) {
        pooling_.check(bags, rows());
        auto& y = out_.resize(dim(), bags.size());
        pooling_.forward(table_, bags, y);
        return y;
    }

    /// Pools into a caller-owned buffer; caches nothing, safe on a const layer from many threads.
    const MatrixView<T>& infer(const Bags<T>& bags, Buffer<T>& out) const {
        pooling_.check(bags, rows());
        auto& y = out.resize(dim(), bags.size());
        pooling_.pool(table_, bags, y, nullptr);
        return y;
    }

    /// The row-sparse gradient of the table for dy (dim x bags of the last forward). Rows are summed
    /// in id order, each over the batch in bag order: the same bits every run.
    const RowSparseGrad<T>& backward(const ConstView<T>& dy) { return pooling_.backward(dim(), dy); }

private:
    static std::optional<std::int64_t> resolved_padding(Index rows, Index dim, std::optional<std::int64_t> padding_idx,
                                                        const std::string& name) {
        detail::require(rows > 0 && dim > 0, name, ": rows and dim must be positive, got ", rows, " x ", dim);
        return detail::padding_row(padding_idx, rows, name);
    }

    detail::BagPooling<T> pooling_;
    Matrix<T> table_;
    Buffer<T> out_;
};

}  // namespace moe
