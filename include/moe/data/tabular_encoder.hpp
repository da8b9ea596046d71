#pragma once
// Features from a Table: one-hot categories and standardised numbers, learnt from a training table.
#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "moe/data/table.hpp"

namespace moe {

/// Encodes the chosen columns of tables like the training one. Learnt from the training table:
/// per categorical column its values (sorted, so the encoding does not depend on row order) plus an
/// "other" slot for values the training table did not have; per numeric column its mean and
/// standard deviation over the present values. A missing number encodes as the mean (0).
/// Output: features x rows, the columns' slots in the order given.
class TabularEncoder {
public:
    TabularEncoder(const Table& train, const std::vector<std::string>& columns) {
        detail::require(!columns.empty(), "moe::TabularEncoder: no columns to encode");
        for (const auto& name : columns) {
            const TableColumn& col = train.column(name);
            detail::require(col.kind != ColumnKind::ignored, "moe::TabularEncoder: column '", name, "' of '", train.path,
                            "' was read as ignored");
            Encoded e;
            e.name = name;
            e.kind = col.kind;
            e.offset = features_;
            if (col.kind == ColumnKind::numeric) {
                double sum = 0, sq = 0;
                Index n = 0;
                for (double v : col.numbers)
                    if (!std::isnan(v)) sum += v, sq += v * v, ++n;
                e.mean = n ? sum / double(n) : 0.0;
                const double var = n ? std::max(0.0, sq / double(n) - e.mean * e.mean) : 0.0;
                e.scale = var > 0 ? 1.0 / std::sqrt(var) : 1.0;  // a constant column encodes as 0
                names_.push_back(name);
                features_ += 1;
            } else {
                std::vector<std::string> values = col.values;
                std::sort(values.begin(), values.end());
                for (std::size_t i = 0; i < values.size(); ++i) {
                    e.slots.emplace(values[i], static_cast<Index>(i));
                    names_.push_back(name + "=" + values[i]);
                }
                names_.push_back(name + "=<other>");
                features_ += static_cast<Index>(values.size()) + 1;
            }
            encoded_.push_back(std::move(e));
        }
    }

    Index features() const { return features_; }
    /// "column" for a number, "column=value" for a category slot, "column=<other>" for unseen values.
    const std::vector<std::string>& feature_names() const { return names_; }

    /// features x rows for a table with the same columns.
    template <class T>
    Matrix<T> transform(const Table& table) const {
        Matrix<T> x = Matrix<T>::Zero(features_, table.rows);
        for (const Encoded& e : encoded_) {
            const TableColumn& col = table.column(e.name);
            detail::require(col.kind == e.kind, "moe::TabularEncoder: column '", e.name, "' of '", table.path,
                            "' is read as another kind than in the training table");
            if (e.kind == ColumnKind::numeric) {
                for (Index r = 0; r < table.rows; ++r) {
                    const double v = col.numbers[static_cast<std::size_t>(r)];
                    x(e.offset, r) = std::isnan(v) ? T(0) : static_cast<T>((v - e.mean) * e.scale);
                }
                continue;
            }
            // Map this table's codes to slots once per distinct value, then per row.
            const Index other = static_cast<Index>(e.slots.size());
            std::vector<Index> slot(col.values.size());
            for (std::size_t i = 0; i < col.values.size(); ++i) {
                auto it = e.slots.find(col.values[i]);
                slot[i] = it == e.slots.end() ? other : it->second;
            }
            for (Index r = 0; r < table.rows; ++r) x(e.offset + slot[col.codes[static_cast<std::size_t>(r)]], r) = T(1);
        }
        return x;
    }

private:
    struct Encoded {
        std::string name;
        ColumnKind kind;
        Index offset = 0;
        double mean = 0, scale = 1;
        std::unordered_map<std::string, Index> slots;
    };
    std::vector<Encoded> encoded_;
    std::vector<std::string> names_;
    Index features_ = 0;
};

}  // namespace moe
