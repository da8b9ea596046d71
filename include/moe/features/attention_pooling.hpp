#pragma once
// Target-attention pooling of ID features (DIN): the attention layers of a FeatureSpec's attention
// features as one composite, so that a Model<> binds their parameters in one store, and the
// row-sparse gradient of a table from per-id gradients (the attention's dhistory).
#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/features/feature_spec.hpp"
#include "moe/layers/row_sparse.hpp"
#include "moe/layers/target_attention.hpp"

namespace moe {
namespace detail {

/// One caller's scratch for the attention features of FeatureInput::infer.
template <class T>
struct AttentionScratch {
    std::vector<std::int64_t> ids, offsets;  // the bags without padding ids
    Buffer<T> history, features, a, b;
};

/// A feature's bags without the table's padding id (as EmbeddingBag leaves it out of a bag): ids
/// and offsets (B + 1) of what attention attends over. Storage reused.
template <class T>
void drop_padding(const Bags<T>& bags, std::optional<std::int64_t> padding, std::vector<std::int64_t>& ids,
                  std::vector<std::int64_t>& offsets) {
    ids.clear();
    offsets.assign(1, 0);
    for (std::size_t b = 0; b + 1 < bags.offsets.size(); ++b) {
        for (auto i = bags.offsets[b]; i < bags.offsets[b + 1]; ++i)
            if (!padding || bags.ids[std::size_t(i)] != *padding) ids.push_back(bags.ids[std::size_t(i)]);
        offsets.push_back(std::int64_t(ids.size()));
    }
}

/// The TargetAttention of every attention feature of a spec, in the spec's order. Parameters
/// "{feature}.mlp.{i}.weight" / ".bias" (model files put them under "attention.").
template <class T>
class FeatureAttentions : public Composite<FeatureAttentions<T>> {
public:
    using Scalar = T;
    using Spec = FeatureSpec;

    explicit FeatureAttentions(const FeatureSpec& spec) {
        for (std::size_t i = 0; i < spec.sparse.size(); ++i) {
            const SparseFeatureSpec& f = spec.sparse[i];
            if (f.attention_target.empty()) continue;
            feature_.push_back(Index(i));
            target_.push_back(spec.feature_index(f.attention_target));
            names_.push_back(f.name);
            layers_.emplace_back(spec.tables[std::size_t(spec.table_index(f.table))].dim, f.attention_hidden, f.attention_softmax,
                                 ActivationKind::relu, "moe::FeatureInput feature '" + f.name + "' attention");
        }
    }

    std::size_t size() const { return layers_.size(); }
    /// The ID feature (index in the spec) of attention k, and the feature it attends to.
    Index feature(std::size_t k) const { return feature_[k]; }
    Index target(std::size_t k) const { return target_[k]; }
    TargetAttention<T>& layer(std::size_t k) { return layers_[k]; }
    const TargetAttention<T>& layer(std::size_t k) const { return layers_[k]; }

    template <class F>
    void for_each_child(F&& f) {
        for (std::size_t k = 0; k < layers_.size(); ++k) f(names_[k], layers_[k]);
    }

private:
    std::vector<Index> feature_, target_;
    std::vector<std::string> names_;
    std::vector<TargetAttention<T>> layers_;
};

/// The vectors of a bag's ids, one column per id (dim x ids), from a table (dim x rows).
template <class T>
const MatrixView<T>& gather_rows(const Matrix<T>& table, const std::vector<std::int64_t>& ids, Buffer<T>& out) {
    auto& h = out.resize(table.rows(), Index(ids.size()));
    for (std::size_t c = 0; c < ids.size(); ++c) h.col(Index(c)) = table.col(Index(ids[c]));
    return h;
}

/// The row-sparse gradient of a table from one gradient per id (dim x ids, column c for ids[c]);
/// rows summed in id order (the same bits every run). Scratch reused.
template <class T>
void per_id_row_gradient(const std::vector<std::int64_t>& ids, const ConstView<T>& d, IdSorter& sorter,
                         std::vector<std::int64_t>& order, std::vector<Index>& slot_of, RowSparseGrad<T>& grad) {
    order.resize(ids.size());
    for (std::size_t p = 0; p < ids.size(); ++p) order[p] = std::int64_t(p);
    plan_row_gradients(ids, order, sorter, slot_of, d.rows(), grad);
    auto& values = grad.values.view();
    for (const std::int64_t p : order) values.col(slot_of[std::size_t(p)]) += d.col(Index(p));
}

}  // namespace detail
}  // namespace moe
