#pragma once
// The UCI Census-Income (KDD) data set as the MMoE paper uses it (Ma et al., KDD 2018, section 5.3):
// task group 1, income > 50K and never married, both binary; their two columns are not features,
// nor is the instance weight (a sampling weight). The training file trains; the test file is split
// at random 1:1 into validation and test. Needs zlib: link moe::data.
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/data/feature_encoder.hpp"
#include "moe/data/tabular_encoder.hpp"
#include "moe/features/feature_data.hpp"
#include "moe/train/dataset.hpp"

namespace moe {

/// The 42 columns of census-income.data / .test (UCI's census-income.names). Continuous columns are
/// numeric; the rest, including the numbers that code categories (industry and occupation recodes,
/// own business, veterans benefits, year), categorical; the instance weight is ignored.
inline std::vector<ColumnSpec> census_income_columns() {
    const char* names[] = {"age", "class of worker", "detailed industry recode", "detailed occupation recode",
                           "education", "wage per hour", "enroll in edu inst last wk", "marital stat",
                           "major industry code", "major occupation code", "race", "hispanic origin", "sex",
                           "member of a labor union", "reason for unemployment", "full or part time employment stat",
                           "capital gains", "capital losses", "dividends from stocks", "tax filer stat",
                           "region of previous residence", "state of previous residence",
                           "detailed household and family stat", "detailed household summary in household",
                           "instance weight", "migration code-change in msa", "migration code-change in reg",
                           "migration code-move within reg", "live in this house 1 year ago",
                           "migration prev res in sunbelt", "num persons worked for employer",
                           "family members under 18", "country of birth father", "country of birth mother",
                           "country of birth self", "citizenship", "own business or self employed",
                           "fill inc questionnaire for veteran's admin", "veterans benefits", "weeks worked in year",
                           "year", "income"};
    std::vector<ColumnSpec> cols;
    for (const char* n : names) cols.push_back({n, ColumnKind::categorical});
    for (int c : {0, 5, 16, 17, 18, 30, 39}) cols[static_cast<std::size_t>(c)].kind = ColumnKind::numeric;
    cols[24].kind = ColumnKind::ignored;
    return cols;
}

/// How the census files are written: ", "-separated, "?" for missing, a "." ending each line.
inline TableFormat census_income_format(Index max_rows = 0) {
    TableFormat f;
    f.separator = ", ";
    f.missing = "?";
    f.line_end = ".";
    f.max_rows = max_rows;
    return f;
}

/// The encoded data set: train, validation and test, the two tasks of group 1, the feature names.
template <class T>
struct CensusIncome {
    MultiTaskData<T> train, validation, test;
    std::vector<TaskSpec> tasks;
    std::vector<std::string> feature_names;
};

/// The two files in a folder: census-income.data(.gz) and census-income.test(.gz), the .gz first;
/// nothing when either is missing.
inline std::optional<std::pair<std::string, std::string>> find_census_income(const std::string& dir) {
    namespace fs = std::filesystem;
    auto pick = [&](const std::string& base) -> std::string {
        for (const char* ext : {".gz", ""}) {
            std::error_code ec;
            const fs::path p = fs::path(dir) / (base + ext);
            if (fs::is_regular_file(p, ec)) return p.string();
        }
        return {};
    };
    std::string train = pick("census-income.data"), test = pick("census-income.test");
    if (train.empty() || test.empty()) return std::nullopt;
    return std::make_pair(train, test);
}

namespace detail {

/// The two census files read, each with at least some rows.
inline std::pair<Table, Table> read_census_income(const std::string& train_path, const std::string& test_path,
                                                  Index max_rows) {
    const auto columns = census_income_columns();
    Table train = read_table(train_path, columns, census_income_format(max_rows));
    Table test = read_table(test_path, columns, census_income_format(max_rows));
    if (train.rows == 0 || test.rows < 2)
        throw io_error(concat("moe::load_census_income: '", train_path, "' has ", train.rows, " rows and '", test_path, "' ",
                              test.rows, "; need data in both (two test rows at least)"));
    return {std::move(train), std::move(test)};
}

/// The census columns that are features (all but the labels and the ignored weight) of one kind.
inline std::vector<std::string> census_income_features(std::optional<ColumnKind> kind = std::nullopt) {
    std::vector<std::string> features;
    for (const auto& c : census_income_columns())
        if (c.kind != ColumnKind::ignored && c.name != "income" && c.name != "marital stat" && (!kind || c.kind == *kind))
            features.push_back(c.name);
    return features;
}

/// The labels of task group 1: 2 x rows (income > 50K, never married).
template <class T>
Matrix<T> census_income_labels(const Table& t) {
    Matrix<T> y(2, t.rows);
    const TableColumn &income = t.column("income"), &marital = t.column("marital stat");
    for (Index r = 0; r < t.rows; ++r) {
        const std::string& inc = t.category(income, r);
        if (inc != "50000+" && inc != "- 50000")
            throw io_error(concat("moe::load_census_income: '", t.path, "' row ", r + 1, " (non-empty line)", ": income is '", inc,
                                  "', expected '50000+' or '- 50000'"));
        y(0, r) = T(inc == "50000+");
        y(1, r) = T(t.category(marital, r) == "Never married");
    }
    return y;
}

/// The test file's rows in the seeded random order of the validation / test split: the first half
/// validates, the rest tests.
inline std::vector<Index> census_income_split(Index rows, std::uint64_t split_seed) {
    std::vector<Index> order(static_cast<std::size_t>(rows));
    std::iota(order.begin(), order.end(), Index(0));
    Rng rng(split_seed);
    moe::shuffle(order.begin(), order.end(), rng);
    return order;
}

}  // namespace detail

/// Reads, labels and encodes the census files for task group 1: tasks "income" (column 41 is
/// "50000+") and "marital" (column 7 is "Never married"). Features: the other 39 columns, one-hot
/// and standardised on the training file (TabularEncoder). The test file's rows go at random, from
/// split_seed, half to validation and half to test. max_rows (0: all) limits each file, for quick runs.
template <class T>
CensusIncome<T> load_census_income(const std::string& train_path, const std::string& test_path,
                                   std::uint64_t split_seed = 0, Index max_rows = 0) {
    const auto [train, test] = detail::read_census_income(train_path, test_path, max_rows);
    const TabularEncoder encoder(train, detail::census_income_features());
    CensusIncome<T> d;
    d.tasks = {binary_task("income"), binary_task("marital")};
    d.feature_names = encoder.feature_names();
    d.train.x = encoder.transform<T>(train);
    d.train.labels = detail::census_income_labels<T>(train);
    const Matrix<T> x = encoder.transform<T>(test), y = detail::census_income_labels<T>(test);
    const std::vector<Index> order = detail::census_income_split(test.rows, split_seed);
    const Index half = test.rows / 2;
    auto take = [&](MultiTaskData<T>& out, Index begin, Index end) {
        out.x.resize(x.rows(), end - begin);
        out.labels.resize(2, end - begin);
        for (Index j = begin; j < end; ++j) {
            out.x.col(j - begin) = x.col(order[static_cast<std::size_t>(j)]);
            out.labels.col(j - begin) = y.col(order[static_cast<std::size_t>(j)]);
        }
    };
    take(d.validation, 0, half);
    take(d.test, half, test.rows);
    return d;
}

/// The census data set with ID features: train, validation and test, the input spec, the tasks.
template <class T>
struct CensusIncomeFeatures {
    FeatureData<T> train, validation, test;
    FeatureSpec spec;
    std::vector<TaskSpec> tasks;
};

/// The same data, tasks and split as load_census_income, with the categorical columns as ID
/// features instead of one-hot: each its own table of `dim` (a vocabulary of the training file's
/// values seen at least min_count times; the others share the OOV id 0), the numeric columns
/// dense and standardised (FeatureEncoder).
template <class T>
CensusIncomeFeatures<T> load_census_income_features(const std::string& train_path, const std::string& test_path, Index dim = 4,
                                                    Index min_count = 1, std::uint64_t split_seed = 0, Index max_rows = 0) {
    const auto [train, test] = detail::read_census_income(train_path, test_path, max_rows);
    std::vector<IdColumn> ids;
    for (const auto& name : detail::census_income_features(ColumnKind::categorical)) {
        IdColumn c(name, dim);
        c.min_count = min_count;
        ids.push_back(c);
    }
    const FeatureEncoder encoder(train, detail::census_income_features(ColumnKind::numeric), ids);
    CensusIncomeFeatures<T> d;
    d.tasks = {binary_task("income"), binary_task("marital")};
    d.spec = encoder.spec();
    d.train.features = encoder.transform<T>(train);
    d.train.labels = detail::census_income_labels<T>(train);
    const FeatureBatch<T> x = encoder.transform<T>(test);
    const Matrix<T> y = detail::census_income_labels<T>(test);
    const std::vector<Index> order = detail::census_income_split(test.rows, split_seed);
    const Index half = test.rows / 2;
    auto take = [&](FeatureData<T>& out, Index begin, Index end) {
        gather_samples(x, order.data() + begin, end - begin, out.features);
        out.labels.resize(2, end - begin);
        for (Index j = begin; j < end; ++j) out.labels.col(j - begin) = y.col(order[static_cast<std::size_t>(j)]);
    };
    take(d.validation, 0, half);
    take(d.test, half, test.rows);
    return d;
}

}  // namespace moe
