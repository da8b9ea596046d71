#pragma once
// The description of a model's input: dense features and ID features looked up in embedding
// tables, and the batch that carries them (torchrec's KeyedJaggedTensor, in moe's terms).
//
//   FeatureSpec spec;
//   spec.dense = 13;                                        // 13 dense numbers per sample
//   spec.add_table("items", 100000, 16);                    // a table of 100k rows of 16
//   spec.add_table("users", 50000, 16);
//   spec.add_feature("item_id", "items", PoolingMode::sum); // one id per sample
//   spec.add_feature("recent_items", "items", PoolingMode::mean, 50); // the same table, up to 50 ids
//   spec.add_feature("user_id", "users", PoolingMode::sum);
//   spec.add_attention_feature("attended", "items", "item_id", 50); // the history by target attention
//   spec.width();                                           // 13 + 16 + 16 + 16 + 16 = 77
//
// The input layer (FeatureInput) concatenates, per sample, the dense features (normalised when a
// mean and std are given) and one pooled vector per ID feature, in the order of the spec.
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"
#include "moe/layers/embedding_bag.hpp"

namespace moe {

/// An embedding table: `rows` ids, vectors of `dim`; optional padding row (as torch's padding_idx).
/// `vocabulary` (optional) lists the values of ids 1..rows-1 (Vocabulary::tokens(); id 0 is the
/// out-of-vocabulary row), so that a model file carries the ids' meaning with the table.
struct TableSpec {
    std::string name;
    Index rows = 0;
    Index dim = 0;
    std::optional<std::int64_t> padding_idx;
    std::vector<std::string> vocabulary;
};

/// An ID feature: a bag of ids per sample, looked up in `table` and pooled. max_length > 0 refuses
/// bags longer than that (a history of at most that many items); 0 means no limit.
/// With attention_target (the name of another ID feature, e.g. the candidate item), the bag is
/// pooled by target attention instead (DIN, TargetAttention): its vectors weighted by an MLP
/// (hidden widths attention_hidden, ReLU) over [h, t, h - t, h * t] against that feature's pooled
/// vector t, the weights softmax-normalised per sample when attention_softmax (DIN does not).
struct SparseFeatureSpec {
    std::string name;
    std::string table;
    PoolingMode pooling = PoolingMode::sum;
    Index max_length = 0;
    std::string attention_target;
    std::vector<Index> attention_hidden;
    bool attention_softmax = false;
};

/// A model's input: `dense` numbers per sample, then one pooled vector per ID feature.
/// dense_mean and dense_std (empty, or one per dense feature) normalise the dense part:
/// (x - mean) / std. Tables may be shared by several features.
struct FeatureSpec {
    Index dense = 0;
    std::vector<double> dense_mean, dense_std;
    std::vector<TableSpec> tables;
    std::vector<SparseFeatureSpec> sparse;

    FeatureSpec& add_table(std::string name, Index rows, Index dim, std::optional<std::int64_t> padding_idx = std::nullopt) {
        tables.push_back({std::move(name), rows, dim, padding_idx, {}});
        return *this;
    }
    FeatureSpec& add_feature(std::string name, std::string table, PoolingMode pooling = PoolingMode::sum,
                             Index max_length = 0) {
        sparse.push_back({std::move(name), std::move(table), pooling, max_length, {}, {}, false});
        return *this;
    }
    /// A history pooled by target attention against the ID feature `target` (which must read a
    /// table of the same dim and not be pooled by attention itself).
    FeatureSpec& add_attention_feature(std::string name, std::string table, std::string target, Index max_length = 0,
                                       std::vector<Index> hidden = {36}, bool softmax = false) {
        sparse.push_back({std::move(name), std::move(table), PoolingMode::sum, max_length, std::move(target), std::move(hidden), softmax});
        return *this;
    }
    /// The index of the ID feature called `name`, or -1.
    Index feature_index(const std::string& name) const {
        for (std::size_t i = 0; i < sparse.size(); ++i)
            if (sparse[i].name == name) return Index(i);
        return -1;
    }

    /// The index of the table called `name`, or -1.
    Index table_index(const std::string& name) const {
        for (std::size_t i = 0; i < tables.size(); ++i)
            if (tables[i].name == name) return Index(i);
        return -1;
    }

    /// Features per sample after the input layer: dense + the dims of the ID features' tables.
    Index width() const {
        Index w = dense;
        for (const auto& f : sparse)
            if (const Index t = table_index(f.table); t >= 0) w += tables[std::size_t(t)].dim;
        return w;
    }
};

/// One batch of B samples for a FeatureSpec: `dense` is dense x B (it may be 0 x B, or empty when
/// the spec has no dense features), `sparse` maps every ID feature's name to B bags of ids.
template <class T>
struct FeatureBatch {
    Matrix<T> dense;
    std::map<std::string, Bags<T>> sparse;
};

namespace detail {

/// Checks a spec; returns it. Errors name `layer` and the table or feature.
inline const FeatureSpec& checked_feature_spec(const FeatureSpec& s, const std::string& layer) {
    // Sizes are bounded so that the width (a sum of them) cannot overflow, whatever a file says.
    constexpr Index kMaxSize = Index(1) << 40;
    require(s.dense >= 0 && s.dense <= kMaxSize, layer, ": dense must be in [0, 2^40], got ", s.dense);
    require(s.dense > 0 || !s.sparse.empty(), layer, ": no features (dense is 0 and there are no ID features)");
    for (const auto* v : {&s.dense_mean, &s.dense_std})
        require(v->empty() || Index(v->size()) == s.dense, layer, ": dense_mean and dense_std need one entry per dense feature (",
                s.dense, "), got ", v->size());
    require(s.dense_mean.empty() == s.dense_std.empty(), layer, ": give both dense_mean and dense_std, or neither");
    for (std::size_t i = 0; i < s.dense_mean.size(); ++i) {
        require(std::isfinite(s.dense_mean[i]), layer, ": dense_mean[", i, "] is ", s.dense_mean[i]);
        require(std::isfinite(s.dense_std[i]) && s.dense_std[i] > 0, layer, ": dense_std[", i, "] must be finite and > 0, got ",
                s.dense_std[i]);
    }
    for (std::size_t i = 0; i < s.tables.size(); ++i) {
        const TableSpec& t = s.tables[i];
        require(!t.name.empty(), layer, ": table ", i, " has no name");
        require(s.table_index(t.name) == Index(i), layer, ": two tables are called '", t.name, "'");
        require(t.rows > 0 && t.dim > 0 && t.rows <= kMaxSize && t.dim <= kMaxSize, layer, ": table '", t.name,
                "' must have positive rows and dim (at most 2^40), got ", t.rows, " x ", t.dim);
        padding_row(t.padding_idx, t.rows, layer + ": table '" + t.name + "'");
        require(t.vocabulary.empty() || Index(t.vocabulary.size()) + 1 == t.rows, layer, ": table '", t.name, "' has ",
                t.rows, " rows but a vocabulary of ", t.vocabulary.size(), " values (rows must be values + 1: id 0 is out of vocabulary)");
    }
    for (std::size_t i = 0; i < s.sparse.size(); ++i) {
        const SparseFeatureSpec& f = s.sparse[i];
        require(!f.name.empty(), layer, ": ID feature ", i, " has no name");
        for (std::size_t j = 0; j < i; ++j) require(s.sparse[j].name != f.name, layer, ": two ID features are called '", f.name, "'");
        require(s.table_index(f.table) >= 0, layer, ": feature '", f.name, "' uses table '", f.table, "', which the spec does not have");
        require(f.max_length >= 0, layer, ": feature '", f.name, "': max_length must be >= 0 (0: no limit), got ", f.max_length);
        if (f.attention_target.empty()) {
            require(f.attention_hidden.empty() && !f.attention_softmax, layer, ": feature '", f.name,
                    "' has attention settings but no attention_target");
            continue;
        }
        const Index t = s.feature_index(f.attention_target);
        require(t >= 0, layer, ": feature '", f.name, "' attends to '", f.attention_target, "', which is not an ID feature of the spec");
        const SparseFeatureSpec& target = s.sparse[std::size_t(t)];
        require(target.attention_target.empty(), layer, ": feature '", f.name, "' attends to '", target.name,
                "', which is pooled by attention itself (the target must be a plainly pooled feature)");
        const Index dim = s.tables[std::size_t(s.table_index(f.table))].dim;
        if (const Index tt = s.table_index(target.table); tt >= 0)
            require(s.tables[std::size_t(tt)].dim == dim, layer, ": feature '", f.name, "' (dim ", dim, ") attends to '", target.name,
                    "' of dim ", s.tables[std::size_t(tt)].dim, "; they must have the same dim");
        for (Index h : f.attention_hidden)
            require(h > 0 && h <= kMaxSize, layer, ": feature '", f.name, "': attention_hidden widths must be positive, got ", h);
    }
    return s;
}

}  // namespace detail
}  // namespace moe
