#pragma once
// Embedding: one vector per id (torch.nn.Embedding), for sequences of ids (a user's history, the
// tokens of a transformer block), with a row-sparse gradient.
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

/// A table of `rows` embeddings of size `dim`; forward(ids) is dim x ids.size(), column j the row
/// of ids[j] (the padding row too, as PyTorch: it starts at zero and gets no gradient). backward(dy)
/// takes dim x ids.size() and returns the row-sparse gradient of the table. Table layout as
/// EmbeddingBag's: dim x rows, PyTorch's weight byte for byte.
template <class T>
class Embedding {
public:
    using Scalar = T;

    Embedding(Index rows, Index dim, std::optional<std::int64_t> padding_idx = std::nullopt,
              std::string name = "moe::Embedding")
        : name_(std::move(name)) {
        detail::require(rows > 0 && dim > 0, name_, ": rows and dim must be positive, got ", rows, " x ", dim);
        padding_ = detail::padding_row(padding_idx, rows, name_);
        table_ = detail::table_matrix<T>(dim, rows, T(0));
    }

    const std::string& name() const { return name_; }
    Index rows() const { return table_.cols(); }
    Index dim() const { return table_.rows(); }
    std::optional<std::int64_t> padding_idx() const { return padding_; }
    Matrix<T>& table() { return table_; }
    const Matrix<T>& table() const { return table_; }

    /// N(0, 1) as PyTorch, the padding row zero.
    void reset_parameters(Rng& rng) {
        for (Index i = 0; i < table_.size(); ++i) table_.data()[i] = T(rng.normal());
        if (padding_) table_.col(Index(*padding_)).setZero();
    }

    /// Checks every id first (an error names the layer, the position and the id, and changes
    /// nothing). Keeps a pointer to `ids`: it must stay alive and unchanged until backward.
    const MatrixView<T>& forward(const std::vector<std::int64_t>& ids) {
        infer(ids, out_);
        ids_ = &ids;
        return out_.view();
    }

    /// Looks up into a caller-owned buffer; caches nothing, safe on a const layer from many threads.
    const MatrixView<T>& infer(const std::vector<std::int64_t>& ids, Buffer<T>& out) const {
        for (std::size_t p = 0; p < ids.size(); ++p)
            detail::require(ids[p] >= 0 && ids[p] < rows(), name_, ": id ", ids[p], " at position ", p,
                            " is outside the table of ", rows(), " rows");
        auto& y = out.resize(dim(), Index(ids.size()));
        for (std::size_t p = 0; p < ids.size(); ++p) y.col(Index(p)) = table_.col(Index(ids[p]));
        return y;
    }

    /// The row-sparse gradient of the table for dy (dim x ids of the last forward).
    const RowSparseGrad<T>& backward(const ConstView<T>& dy) {
        detail::require(ids_ != nullptr, name_, "::backward: no forward before it");
        const std::vector<std::int64_t>& ids = *ids_;
        detail::check_shape(dy, dim(), Index(ids.size()), name_, "backward", "output gradient");
        order_.clear();
        for (std::size_t p = 0; p < ids.size(); ++p)
            if (!(padding_ && ids[p] == *padding_)) order_.push_back(std::int64_t(p));
        detail::plan_row_gradients(ids, order_, sorter_, slot_of_, dim(), grad_);
        auto& g = grad_.values.view();
        for (const std::int64_t p : order_) g.col(slot_of_[std::size_t(p)]) += dy.col(Index(p));
        return grad_;
    }

private:
    std::string name_;
    std::optional<std::int64_t> padding_;
    Matrix<T> table_;
    Buffer<T> out_;
    const std::vector<std::int64_t>* ids_ = nullptr;
    std::vector<std::int64_t> order_;
    detail::IdSorter sorter_;
    std::vector<Index> slot_of_;
    RowSparseGrad<T> grad_;
};

}  // namespace moe
