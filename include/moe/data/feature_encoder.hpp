#pragma once
// FeatureEncoder: the columns of a Table as a model's input with ID features. Dense columns go
// through a TabularEncoder (standardised numbers, one-hot categories); categorical columns chosen
// as ID columns become ID features: one id per cell, or a bag per cell for multi-valued columns
// ("a|b|c"), through a vocabulary learnt from the training table or the hashing trick.
//
//   FeatureEncoder enc(train, {"age", "wage"}, {IdColumn{"education", 4}, IdColumn{"hobbies", 8, PoolingMode::mean, '|'}});
//   FeatureModel<MMoE<float>> model(enc.spec(), mmoe_spec, 1);
//   FeatureData<float> data{enc.transform<float>(train), labels, {}};
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moe/data/tabular_encoder.hpp"
#include "moe/features/feature_spec.hpp"
#include "moe/features/hashing.hpp"
#include "moe/features/vocabulary.hpp"

namespace moe {

/// A categorical column read as an ID feature called like the column.
struct IdColumn {
    IdColumn(std::string column_name, Index embedding_dim = 8, PoolingMode bag_pooling = PoolingMode::sum, char cell_separator = '\0')
        : column(std::move(column_name)), dim(embedding_dim), pooling(bag_pooling), separator(cell_separator) {}

    std::string column;
    Index dim = 8;                           ///< the embedding dim of its table, > 0
    PoolingMode pooling = PoolingMode::sum;  ///< how a bag's vectors are pooled
    char separator = '\0';                   ///< '\0': one value per cell; else cells are bags ("a|b|c")
    Index min_count = 1;                     ///< values seen fewer times in training share the OOV id 0
    Index hash_rows = 0;                     ///< > 0: ids are hashed_id(value, hash_rows), no vocabulary
    Index max_length = 0;                    ///< the feature's max_length (0: no limit)
    /// Its table; empty: a table of its own called like the column. Columns naming the same table
    /// share it: one vocabulary of all their training values (the same dim and hash_rows needed).
    std::string table;
};

/// Learnt from a training table; transform() encodes tables with the same columns. spec() is the
/// FeatureSpec of the output: dense = the TabularEncoder's features (already standardised, so no
/// dense_mean / dense_std), one table per distinct IdColumn::table (rows = vocabulary + 1 for the
/// OOV id 0, with the vocabulary; or hash_rows), one ID feature per IdColumn in the order given.
class FeatureEncoder {
public:
    FeatureEncoder(const Table& train, const std::vector<std::string>& dense_columns, const std::vector<IdColumn>& id_columns) {
        const std::string who = "moe::FeatureEncoder";
        detail::require(!dense_columns.empty() || !id_columns.empty(), who, ": no columns to encode");
        if (!dense_columns.empty()) dense_.emplace(train, dense_columns);
        spec_.dense = dense_ ? dense_->features() : 0;
        // Tables first: their vocabularies count the values of every column that uses them.
        std::vector<std::unordered_map<std::string, Index>> counts;
        for (const IdColumn& c : id_columns) {
            detail::require(c.dim > 0, who, ": ID column '", c.column, "': dim must be positive, got ", c.dim);
            detail::require(c.min_count >= 1, who, ": ID column '", c.column, "': min_count must be >= 1, got ", c.min_count);
            detail::require(c.hash_rows >= 0, who, ": ID column '", c.column, "': hash_rows must be >= 0, got ", c.hash_rows);
            const TableColumn& col = categorical(train, c.column);
            const std::string table = c.table.empty() ? c.column : c.table;
            Index t = spec_.table_index(table);
            if (t < 0) {
                t = Index(spec_.tables.size());
                spec_.add_table(table, c.hash_rows > 0 ? c.hash_rows : 1, c.dim);
                first_column_.push_back(columns_.size());
                counts.emplace_back();
            } else {
                const IdColumn& first = id_columns[first_column_[std::size_t(t)]];
                detail::require(first.dim == c.dim && first.hash_rows == c.hash_rows &&
                                    (c.hash_rows > 0 || first.min_count == c.min_count),
                                who, ": ID columns '", first.column, "' and '", c.column, "' share table '", table,
                                "' but not dim, hash_rows and min_count (", first.dim, ", ", first.hash_rows, ", ",
                                first.min_count, " vs ", c.dim, ", ", c.hash_rows, ", ", c.min_count, ")");
            }
            if (c.hash_rows == 0) {  // count each distinct cell once, times its rows
                std::vector<Index> rows_of(col.values.size(), 0);
                for (const std::uint32_t code : col.codes) ++rows_of[code];
                for (std::size_t v = 0; v < col.values.size(); ++v)
                    for_each_value(col.values[v], c.separator,
                                   [&](std::string_view p) { counts[std::size_t(t)][std::string(p)] += rows_of[v]; });
            }
            spec_.add_feature(c.column, table, c.pooling, c.max_length);
            columns_.push_back(c);
            table_of_.push_back(t);
        }
        vocabularies_.resize(spec_.tables.size());
        for (std::size_t t = 0; t < spec_.tables.size(); ++t) {
            const IdColumn& first = columns_[first_column_[t]];
            if (first.hash_rows > 0) continue;
            vocabularies_[t] = Vocabulary::from_counts(counts[t], first.min_count);
            spec_.tables[t].rows = vocabularies_[t].size();
            spec_.tables[t].vocabulary = vocabularies_[t].tokens();
        }
        detail::checked_feature_spec(spec_, who);
    }

    /// The input description for FeatureModel / FeatureInput.
    const FeatureSpec& spec() const { return spec_; }
    /// The names of the dense rows (TabularEncoder::feature_names), empty without dense columns.
    std::vector<std::string> dense_names() const { return dense_ ? dense_->feature_names() : std::vector<std::string>{}; }

    /// All rows of `table` as one FeatureBatch (dense: spec().dense x rows; one bag per row per ID
    /// column). Values the training table did not have get the OOV id 0 (hashed columns: their hash).
    template <class T>
    FeatureBatch<T> transform(const Table& table) const {
        FeatureBatch<T> out;
        out.dense = dense_ ? dense_->transform<T>(table) : Matrix<T>(0, table.rows);
        for (std::size_t i = 0; i < columns_.size(); ++i) {
            const IdColumn& c = columns_[i];
            const TableColumn& col = categorical(table, c.column);
            const std::size_t t = std::size_t(table_of_[i]);
            // The ids of each distinct value of this table's column, then per row.
            std::vector<std::vector<std::int64_t>> ids(col.values.size());
            std::string part;
            for (std::size_t v = 0; v < col.values.size(); ++v)
                for_each_value(col.values[v], c.separator, [&](std::string_view p) {
                    part.assign(p);
                    ids[v].push_back(c.hash_rows > 0 ? hashed_id(p, c.hash_rows) : vocabularies_[t].id(part));
                });
            Bags<T>& bags = out.sparse[c.column];
            bags.offsets.reserve(std::size_t(table.rows) + 1);
            for (Index r = 0; r < table.rows; ++r) {
                const auto& row_ids = ids[col.codes[std::size_t(r)]];
                bags.ids.insert(bags.ids.end(), row_ids.begin(), row_ids.end());
                bags.offsets.push_back(std::int64_t(bags.ids.size()));
            }
        }
        return out;
    }

private:
    /// f(value) for the cell's values: the whole cell without a separator, else its parts (an
    /// empty cell is an empty bag).
    template <class F>
    static void for_each_value(std::string_view cell, char separator, F&& f) {
        if (separator == '\0') f(cell);
        else detail::for_each_part(cell, separator, f);
    }

    /// A categorical column of t; a numeric or ignored one is refused by name.
    static const TableColumn& categorical(const Table& t, const std::string& name) {
        const TableColumn& col = t.column(name);
        detail::require(col.kind == ColumnKind::categorical, "moe::FeatureEncoder: ID column '", name, "' of '", t.path,
                        "' is not read as categorical (read it with ColumnKind::categorical to use its values as ids)");
        return col;
    }

    std::optional<TabularEncoder> dense_;
    FeatureSpec spec_;
    std::vector<IdColumn> columns_;
    std::vector<Index> table_of_;
    std::vector<std::size_t> first_column_;  // per table: the first column using it (its settings)
    std::vector<Vocabulary> vocabularies_;
};

}  // namespace moe
