#pragma once
// FeatureInput: the input block of a model with ID features. It owns the embedding tables of a
// FeatureSpec and turns a FeatureBatch into the features x B matrix the models take: the dense
// part (normalised when the spec says so) on top, then one pooled vector per ID feature in the
// spec's order. Its backward gives each table's row-sparse gradient; the dense part has no
// parameters and gets no gradient. Features pooled by target attention (DIN) have an MLP each,
// whose parameters are attention_params() (dense, trained by Adam next to the net's).
#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/model.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/table_memory.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"
#include "moe/features/attention_pooling.hpp"
#include "moe/features/feature_spec.hpp"
#include "moe/features/vocabulary.hpp"
#include "moe/layers/embedding_bag.hpp"
#include "moe/layers/row_sparse.hpp"

namespace moe {

/// The input block: tables from the spec (each dim x rows, PyTorch's weight byte for byte, N(0, 1)
/// with the padding row zero), pooled per feature. Shapes: forward(batch) is spec.width() x B;
/// backward(dx) takes spec.width() x B. A table shared by several features gets one gradient, the
/// features' parts added in the spec's order (the same bits every run). An attention feature's
/// output is its history pooled by attention against its target feature's output.
template <class T>
class FeatureInput {
public:
    using Scalar = T;

    explicit FeatureInput(FeatureSpec spec, std::string name = "moe::FeatureInput")
        : spec_(detail::checked_feature_spec(spec, name)), name_(std::move(name)), attention_(spec_) {
        for (const TableSpec& t : spec_.tables) {
            tables_.push_back(detail::table_matrix<T>(t.dim, t.rows, T(0)));
            padding_.push_back(detail::padding_row(t.padding_idx, t.rows, name_));
            try {
                vocabularies_.emplace_back(t.vocabulary);
            } catch (const config_error& e) {
                throw config_error(detail::concat(name_, ": table '", t.name, "': ", e.what()));
            }
        }
        Index row = spec_.dense;
        for (const SparseFeatureSpec& f : spec_.sparse) {
            const Index t = spec_.table_index(f.table);
            table_of_.push_back(t);
            first_row_.push_back(row);
            row += spec_.tables[std::size_t(t)].dim;
            pooling_.emplace_back(f.pooling, padding_[std::size_t(t)], name_ + " feature '" + f.name + "'");
        }
        if (!spec_.dense_mean.empty()) {
            mean_ = Eigen::Map<const Vector<double>>(spec_.dense_mean.data(), spec_.dense).template cast<T>();
            inv_std_ = Eigen::Map<const Vector<double>>(spec_.dense_std.data(), spec_.dense).cwiseInverse().template cast<T>();
        }
        width_ = row;
        merged_.resize(spec_.tables.size());
        attention_of_.assign(spec_.sparse.size(), -1);
        for (std::size_t k = 0; k < attention_.size(); ++k) attention_of_[std::size_t(attention_.feature(k))] = Index(k);
        attention_state_.resize(attention_.size());
    }

    /// The parameters of the attention features' MLPs ("{feature}.mlp.{i}.*"; empty without such
    /// features): dense parameters, to be trained by Adam (fit does).
    ParameterStore<T>& attention_params() { return attention_.params(); }
    const ParameterStore<T>& attention_params() const { return attention_.params(); }
    /// The attention features' layers as one module (model files read and write its tensors).
    Model<detail::FeatureAttentions<T>>& attention_module() { return attention_; }
    /// Attention k's layer (k in the order of the spec's attention features).
    const TargetAttention<T>& attention(std::size_t k) const { return attention_.layer(k); }
    std::size_t attentions() const { return attention_.size(); }

    const FeatureSpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }
    /// Features per sample of the output: spec().width().
    Index width() const { return width_; }
    Index tables() const { return Index(tables_.size()); }
    /// Table i of the spec, dim x rows.
    Matrix<T>& table(Index i) { return tables_.at(std::size_t(i)); }
    const Matrix<T>& table(Index i) const { return tables_.at(std::size_t(i)); }
    /// The table called `name`; throws config_error naming it when there is none.
    Matrix<T>& table(const std::string& name) { return tables_[std::size_t(checked_table(name))]; }
    const Matrix<T>& table(const std::string& name) const { return tables_[std::size_t(checked_table(name))]; }

    /// The vocabulary of table i (empty when the spec gives none: ids are the caller's).
    const Vocabulary& vocabulary(Index i) const { return vocabularies_.at(std::size_t(i)); }

    /// N(0, 1) as torch.nn.EmbeddingBag, padding rows zero; tables in the spec's order.
    void reset_parameters(Rng& rng) {
        for (std::size_t t = 0; t < tables_.size(); ++t) {
            Matrix<T>& w = tables_[t];
            for (Index i = 0; i < w.size(); ++i) w.data()[i] = T(rng.normal());
            if (padding_[t]) w.col(Index(*padding_[t])).setZero();
        }
        static_cast<detail::FeatureAttentions<T>&>(attention_).reset_parameters(rng);  // after the tables: their values as before
    }

    /// The batch size of `batch`, after checking all of it against the spec: the dense matrix's
    /// shape, every feature present and no unknown one, B bags per feature, offsets, ids inside the
    /// tables, lengths within max_length, finite per-id weights (sum pooling only). Errors name the
    /// feature and the value.
    Index check(const FeatureBatch<T>& batch) const {
        for (const auto& [key, bags] : batch.sparse) {
            bool known = false;
            for (const auto& f : spec_.sparse) known = known || f.name == key;
            if (!known) throw config_error(detail::concat(name_, ": the batch has feature '", key, "', which the spec does not have",
                                                          known_features()));
        }
        Index b = -1;
        if (spec_.dense > 0) {
            if (batch.dense.rows() != spec_.dense)
                throw shape_error(detail::concat(name_, ": the dense features are ", batch.dense.rows(), " x ", batch.dense.cols(),
                                                 ", the spec has ", spec_.dense, " dense features"));
            b = batch.dense.cols();
        } else if (batch.dense.rows() != 0) {
            throw shape_error(detail::concat(name_, ": the batch has ", batch.dense.rows(), " dense features, the spec none"));
        }
        for (std::size_t i = 0; i < spec_.sparse.size(); ++i) {
            const SparseFeatureSpec& f = spec_.sparse[i];
            const auto it = batch.sparse.find(f.name);
            if (it == batch.sparse.end()) throw config_error(detail::concat(name_, ": the batch has no feature '", f.name, "'"));
            const Bags<T>& bags = it->second;
            if (b < 0) b = bags.size();
            if (bags.size() != b)
                throw shape_error(detail::concat(name_, ": feature '", f.name, "' has ", bags.size(), " bags, the batch has ", b,
                                                 " samples"));
            pooling_[i].check(bags, tables_[std::size_t(table_of_[i])].cols());
            if (attention_of_[i] >= 0)
                detail::require(bags.weights.empty(), name_, ": feature '", f.name, "' is pooled by attention and takes no per-id weights");
            if (f.max_length > 0)
                for (Index s = 0; s < b; ++s) {
                    const std::int64_t len = bags.offsets[std::size_t(s) + 1] - bags.offsets[std::size_t(s)];
                    detail::require(len <= f.max_length, name_, ": feature '", f.name, "': sample ", s, " has ", len,
                                    " ids, more than its max_length ", f.max_length);
                }
        }
        return b;
    }

    /// Training forward: width x B. Checks the whole batch first (check()). Keeps pointers to the
    /// batch's bags: the batch must stay alive and unchanged until backward.
    const MatrixView<T>& forward(const FeatureBatch<T>& batch) {
        const Index b = check(batch);
        auto& y = out_.resize(width(), b);
        put_dense(batch, y);
        // Features over the threads: each pools its own rows of y with its own state.
        parallel_for_each(Index(spec_.sparse.size()), pooling_flops(batch), [&](Index f) {
            const std::size_t i = std::size_t(f);
            if (attention_of_[i] >= 0) return;  // after its target, below
            const Matrix<T>& w = tables_[std::size_t(table_of_[i])];
            pooling_[i].forward(w, batch.sparse.find(spec_.sparse[i].name)->second, y.middleRows(first_row_[i], w.rows()));
        });
        for (std::size_t k = 0; k < attention_.size(); ++k) {
            const std::size_t i = std::size_t(attention_.feature(k));
            const Bags<T>& bags = batch.sparse.find(spec_.sparse[i].name)->second;
            AttentionState& st = attention_state_[k];
            detail::drop_padding(bags, padding_[std::size_t(table_of_[i])], st.ids, st.offsets);
            const MatrixView<T>& h = detail::gather_rows(tables_[std::size_t(table_of_[i])], st.ids, st.history);
            const Index dim = h.rows();
            y.middleRows(first_row_[i], dim) =
                attention_.layer(k).forward(h, st.offsets, rows(y, first_row_[std::size_t(attention_.target(k))], dim));
        }
        batch_ = b;
        return y;
    }

    /// Evaluation into a caller-owned buffer; caches nothing, safe on a const input from many threads.
    /// Attention features need scratch: the caller's (one per thread; nothing allocated once it has
    /// grown), or a temporary one when `scratch` is null.
    const MatrixView<T>& infer(const FeatureBatch<T>& batch, Buffer<T>& out,
                               std::vector<detail::AttentionScratch<T>>* scratch = nullptr) const {
        const Index b = check(batch);
        auto& y = out.resize(width(), b);
        put_dense(batch, y);
        parallel_for_each(Index(spec_.sparse.size()), pooling_flops(batch), [&](Index f) {
            const std::size_t i = std::size_t(f);
            if (attention_of_[i] >= 0) return;
            const Matrix<T>& w = tables_[std::size_t(table_of_[i])];
            pooling_[i].pool(w, batch.sparse.find(spec_.sparse[i].name)->second, y.middleRows(first_row_[i], w.rows()), nullptr);
        });
        if (attention_.size() == 0) return y;
        std::vector<detail::AttentionScratch<T>> local;
        std::vector<detail::AttentionScratch<T>>& sc = scratch ? *scratch : local;
        if (sc.size() < attention_.size()) sc.resize(attention_.size());
        for (std::size_t k = 0; k < attention_.size(); ++k) {
            const std::size_t i = std::size_t(attention_.feature(k));
            const Bags<T>& bags = batch.sparse.find(spec_.sparse[i].name)->second;
            detail::drop_padding(bags, padding_[std::size_t(table_of_[i])], sc[k].ids, sc[k].offsets);
            const MatrixView<T>& h = detail::gather_rows(tables_[std::size_t(table_of_[i])], sc[k].ids, sc[k].history);
            const Index dim = h.rows();
            attention_.layer(k).infer(h, sc[k].offsets, rows(y, first_row_[std::size_t(attention_.target(k))], dim), sc[k].features,
                                      sc[k].a, sc[k].b, y.middleRows(first_row_[i], dim));
        }
        return y;
    }

    /// Back-propagates dx (width x B, the gradient of forward's output) into the tables' row-sparse
    /// gradients (grad()). They hold the last backward's gradient: they are replaced, not added to.
    void backward(const ConstView<T>& dx) {
        detail::require(batch_ >= 0, name_, "::backward: no forward before it");
        detail::check_shape(dx, width(), batch_, name_, "backward", "gradient");
        grad_source_.assign(tables_.size(), kNoGradient);
        // Attention features first: their targets' features get the attention's dtarget added to
        // their own gradient (in a copy of dx), and their tables a gradient per history id.
        ConstView<T> dxa = dx;
        if (attention_.size() > 0) {
            auto& dxl = dx_local_.resize(dx.rows(), dx.cols());
            dxl = dx;
            for (std::size_t k = 0; k < attention_.size(); ++k) {
                const std::size_t i = std::size_t(attention_.feature(k));
                const Index dim = tables_[std::size_t(table_of_[i])].rows();
                TargetAttention<T>& layer = attention_.layer(k);
                layer.backward(rows(dx, first_row_[i], dim));
                dxl.middleRows(first_row_[std::size_t(attention_.target(k))], dim) += layer.dtarget();
                AttentionState& st = attention_state_[k];
                detail::per_id_row_gradient(st.ids, ConstView<T>(layer.dhistory()), st.sorter, st.order, st.slot_of, st.grad);
            }
            dxa = dxl;
        }
        // Each feature's row-sparse gradient on the threads (its own state), then the gradients of
        // shared tables merged in the spec's order, on one thread: the same bits on any thread count.
        double flops = 0;
        for (std::size_t i = 0; i < pooling_.size(); ++i)
            flops += 2.0 * double(pooling_[i].ids()) * double(tables_[std::size_t(table_of_[i])].rows());
        parallel_for_each(Index(spec_.sparse.size()), flops, [&](Index f) {
            const std::size_t i = std::size_t(f);
            if (attention_of_[i] >= 0) return;
            const Index dim = tables_[std::size_t(table_of_[i])].rows();
            pooling_[i].backward(dim, rows(dxa, first_row_[i], dim));
        });
        for (std::size_t i = 0; i < spec_.sparse.size(); ++i) {
            const std::size_t t = std::size_t(table_of_[i]);
            const RowSparseGrad<T>& g = feature_grad(i);
            Index& source = grad_source_[t];
            if (source == kNoGradient) {
                source = Index(i);
            } else if (source != kMerged) {  // a shared table: the first two features' rows added
                add_rows(pooling_[std::size_t(source)].grad(), g, merged_[t], ids_of_table(t));
                source = kMerged;
            } else {  // a third feature or more: through scratch (grow-only buffers, no allocation)
                add_rows(merged_[t], g, scratch_, ids_of_table(t));
                merged_[t].rows.assign(scratch_.rows.begin(), scratch_.rows.end());
                merged_[t].values.resize(scratch_.values.view().rows(), scratch_.values.view().cols()) = scratch_.values.view();
            }
        }
    }

    /// The row-sparse gradient of table i from the last backward (no rows when no feature uses it).
    const RowSparseGrad<T>& grad(Index i) const {
        const std::size_t t = std::size_t(i);
        detail::require(i >= 0 && i < tables(), name_, "::grad: no table ", i, " (there are ", tables(), ")");
        if (t >= grad_source_.size() || grad_source_[t] == kNoGradient) return empty_;
        return grad_source_[t] == kMerged ? merged_[t] : feature_grad(std::size_t(grad_source_[t]));
    }

    /// Table i's gradient of the last backward as a buffer of the input's own, which the caller
    /// may replace (data-parallel training sums it over processes before the optimizer step);
    /// grad(i) returns it from then on, until the next backward.
    RowSparseGrad<T>& own_grad(Index i) {
        const std::size_t t = std::size_t(i);
        detail::require(i >= 0 && i < tables(), name_, "::own_grad: no table ", i, " (there are ", tables(), ")");
        if (grad_source_.size() != tables_.size()) grad_source_.assign(tables_.size(), kNoGradient);
        if (grad_source_[t] != kMerged) {
            const RowSparseGrad<T>& g = grad(i);
            RowSparseGrad<T>& out = merged_[t];
            out.rows.assign(g.rows.begin(), g.rows.end());
            const auto& v = g.values.view();
            out.values.resize(tables_[t].rows(), Index(g.rows.size())) = v;
            grad_source_[t] = kMerged;
        }
        return merged_[t];
    }

private:
    /// What an attention feature keeps from forward to backward.
    struct AttentionState {
        std::vector<std::int64_t> ids, offsets;  // the last batch's bags without padding ids
        Buffer<T> history;
        detail::IdSorter sorter;
        std::vector<std::int64_t> order;
        std::vector<Index> slot_of;
        RowSparseGrad<T> grad;
    };

    /// Rows [first, first + n) of a features x B matrix.
    static ConstView<T> rows(const ConstView<T>& m, Index first, Index n) {
        return ConstView<T>(m.data() + first, n, m.cols(), m.outerStride());
    }
    /// Feature i's gradient of its table from the last backward.
    const RowSparseGrad<T>& feature_grad(std::size_t i) const {
        return attention_of_[i] >= 0 ? attention_state_[std::size_t(attention_of_[i])].grad : pooling_[i].grad();
    }

    Index checked_table(const std::string& name) const {
        const Index t = spec_.table_index(name);
        detail::require(t >= 0, name_, ": no table called '", name, "'");
        return t;
    }

    std::string known_features() const {
        std::string s = " (its ID features:";
        for (const auto& f : spec_.sparse) s += " '" + f.name + "'";
        return s + ")";
    }

    void put_dense(const FeatureBatch<T>& batch, MatrixView<T>& y) const {
        if (spec_.dense == 0) return;
        if (mean_.size() == 0)
            y.topRows(spec_.dense) = batch.dense;
        else
            y.topRows(spec_.dense) = ((batch.dense.colwise() - mean_).array().colwise() * inv_std_.array()).matrix();
    }

    /// The arithmetic of pooling the batch (ids x dim, twice), for the threading decision.
    double pooling_flops(const FeatureBatch<T>& batch) const {
        double flops = 0;
        for (std::size_t i = 0; i < spec_.sparse.size(); ++i)
            flops += 2.0 * double(batch.sparse.find(spec_.sparse[i].name)->second.ids.size()) *
                     double(tables_[std::size_t(table_of_[i])].rows());
        return flops;
    }

    /// Ids in the last batch of the features that read table t: the most rows its gradient can have.
    Index ids_of_table(std::size_t t) const {
        Index n = 0;
        for (std::size_t i = 0; i < pooling_.size(); ++i)
            if (std::size_t(table_of_[i]) == t)
                n += attention_of_[i] >= 0 ? Index(attention_state_[std::size_t(attention_of_[i])].ids.size()) : pooling_[i].ids();
        return n;
    }

    /// out = a + b, both sorted by row: the union of their rows, values added where both have one.
    /// Room is made for `bound` rows (the ids of the batch), so that a batch of the same size with
    /// other ids allocates nothing.
    static void add_rows(const RowSparseGrad<T>& a, const RowSparseGrad<T>& b, RowSparseGrad<T>& out, Index bound) {
        const auto& av = a.values.view();
        const auto& bv = b.values.view();
        out.rows.clear();
        out.rows.reserve(std::size_t(bound));
        out.values.reserve(av.rows() * bound);
        std::size_t i = 0, j = 0;
        while (i < a.rows.size() || j < b.rows.size()) {
            if (j == b.rows.size() || (i < a.rows.size() && a.rows[i] <= b.rows[j])) {
                if (j < b.rows.size() && a.rows[i] == b.rows[j]) ++j;
                out.rows.push_back(a.rows[i++]);
            } else {
                out.rows.push_back(b.rows[j++]);
            }
        }
        auto& ov = out.values.zeros(av.rows(), Index(out.rows.size()));
        i = j = 0;
        for (std::size_t k = 0; k < out.rows.size(); ++k) {
            if (i < a.rows.size() && a.rows[i] == out.rows[k]) ov.col(Index(k)) += av.col(Index(i++));
            if (j < b.rows.size() && b.rows[j] == out.rows[k]) ov.col(Index(k)) += bv.col(Index(j++));
        }
    }

    FeatureSpec spec_;
    std::string name_;
    std::vector<Matrix<T>> tables_;
    std::vector<std::optional<std::int64_t>> padding_;
    std::vector<Vocabulary> vocabularies_;
    std::vector<Index> table_of_, first_row_;  // per ID feature: its table, its first output row
    std::vector<detail::BagPooling<T>> pooling_;
    Vector<T> mean_, inv_std_;
    Index width_ = 0;
    Buffer<T> out_;
    Index batch_ = -1;
    // Per table, where its gradient of the last backward is: the pooling of one feature (its index),
    // merged_ (features sharing the table), or none. Indices, not pointers: copies stay right.
    static constexpr Index kNoGradient = -1, kMerged = -2;
    std::vector<Index> grad_source_;
    std::vector<RowSparseGrad<T>> merged_;        // per shared table: the features' gradients added
    RowSparseGrad<T> scratch_, empty_;
    Model<detail::FeatureAttentions<T>> attention_;  // the attention features' layers and their parameters
    std::vector<Index> attention_of_;                // per ID feature: its attention's index, or -1
    std::vector<AttentionState> attention_state_;
    Buffer<T> dx_local_;                             // dx with the attentions' target gradients added
};

}  // namespace moe
