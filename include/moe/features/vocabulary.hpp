#pragma once
// Vocabulary: ids for the values of a categorical column, built from the training data.
//
// Id 0 is the out-of-vocabulary bucket: values never seen, or seen fewer than min_count times.
// The kept values get ids 1..n, most frequent first, ties in byte order of the value: the same
// vocabulary whatever the order of the training rows. A table for the feature has size() rows.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"
#include "moe/features/hashing.hpp"
#include "moe/layers/embedding_bag.hpp"

namespace moe {

class Vocabulary {
public:
    /// A vocabulary of `tokens`: tokens[i] gets id i + 1 (a saved vocabulary read back). Tokens
    /// must be unique.
    explicit Vocabulary(std::vector<std::string> tokens = {}) : tokens_(std::move(tokens)) {
        ids_.reserve(tokens_.size());
        for (std::size_t i = 0; i < tokens_.size(); ++i) {
            const auto [it, added] = ids_.emplace(tokens_[i], std::int64_t(i) + 1);
            detail::require(added, "moe::Vocabulary: token '", tokens_[i], "' appears twice (at ", it->second - 1, " and ", i, ")");
        }
    }

    /// The values seen at least min_count times (min_count >= 1), most frequent first.
    static Vocabulary build(const std::vector<std::string>& values, Index min_count = 1) {
        std::unordered_map<std::string, Index> counts;
        for (const auto& v : values) ++counts[v];
        return from_counts(counts, min_count);
    }

    /// The same from counts of the values (value -> times seen).
    static Vocabulary from_counts(const std::unordered_map<std::string, Index>& counts, Index min_count = 1) {
        detail::require(min_count >= 1, "moe::Vocabulary::build: min_count must be >= 1, got ", min_count);
        std::vector<std::pair<std::string, Index>> kept;
        for (const auto& [value, count] : counts)
            if (count >= min_count) kept.emplace_back(value, count);
        std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
        });
        std::vector<std::string> tokens;
        tokens.reserve(kept.size());
        for (auto& k : kept) tokens.push_back(std::move(k.first));
        return Vocabulary(std::move(tokens));
    }

    /// The id of a value: 1..n when kept, 0 (out of vocabulary) otherwise.
    std::int64_t id(const std::string& value) const {
        const auto it = ids_.find(value);
        return it == ids_.end() ? 0 : it->second;
    }
    /// Rows of a table for this vocabulary: the kept values and the out-of-vocabulary row.
    Index size() const { return Index(tokens_.size()) + 1; }
    /// The kept values in id order (id i + 1 is tokens()[i]); what a model file stores.
    const std::vector<std::string>& tokens() const { return tokens_; }

private:
    std::vector<std::string> tokens_;
    std::unordered_map<std::string, std::int64_t> ids_;
};

namespace detail {
/// Calls f(value) for each part of `cell` split at `separator`; an empty cell has no parts, an
/// empty part ("a||b") is the value "" (out of vocabulary unless the training data had it).
template <class F>
void for_each_part(std::string_view cell, char separator, F&& f) {
    if (cell.empty()) return;
    for (std::size_t start = 0;;) {
        const std::size_t end = cell.find(separator, start);
        f(cell.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return;
        start = end + 1;
    }
}
}  // namespace detail

/// One bag per cell of a multi-valued column ("a|b|c"; an empty cell is an empty bag), each value
/// through the vocabulary (unknown values get the out-of-vocabulary id 0).
template <class T>
Bags<T> encode_bags(const std::vector<std::string>& cells, const Vocabulary& vocabulary, char separator = '|') {
    Bags<T> bags;
    std::string part;
    for (const auto& cell : cells) {
        detail::for_each_part(cell, separator, [&](std::string_view v) {
            part.assign(v);
            bags.ids.push_back(vocabulary.id(part));
        });
        bags.offsets.push_back(std::int64_t(bags.ids.size()));
    }
    return bags;
}

/// One bag per cell of a multi-valued column, each value hashed into a table of `rows` rows
/// (hashed_id).
template <class T>
Bags<T> encode_hashed_bags(const std::vector<std::string>& cells, Index rows, char separator = '|') {
    detail::require(rows > 0, "moe::encode_hashed_bags: rows must be positive, got ", rows);
    Bags<T> bags;
    for (const auto& cell : cells) {
        detail::for_each_part(cell, separator, [&](std::string_view v) { bags.ids.push_back(hashed_id(v, rows)); });
        bags.offsets.push_back(std::int64_t(bags.ids.size()));
    }
    return bags;
}

}  // namespace moe
