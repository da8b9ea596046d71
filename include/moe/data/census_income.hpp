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
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/data/tabular_encoder.hpp"
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

/// Reads, labels and encodes the census files for task group 1: tasks "income" (column 41 is
/// "50000+") and "marital" (column 7 is "Never married"). Features: the other 39 columns, one-hot
/// and standardised on the training file (TabularEncoder). The test file's rows go at random, from
/// split_seed, half to validation and half to test. max_rows (0: all) limits each file, for quick runs.
template <class T>
CensusIncome<T> load_census_income(const std::string& train_path, const std::string& test_path,
                                   std::uint64_t split_seed = 0, Index max_rows = 0) {
    const auto columns = census_income_columns();
    const Table train = read_table(train_path, columns, census_income_format(max_rows));
    const Table test = read_table(test_path, columns, census_income_format(max_rows));
    if (train.rows == 0 || test.rows < 2)
        throw io_error(detail::concat("moe::load_census_income: '", train_path, "' has ", train.rows, " rows and '",
                                      test_path, "' ", test.rows, "; need data in both (two test rows at least)"));
    std::vector<std::string> features;
    for (const auto& c : columns)
        if (c.kind != ColumnKind::ignored && c.name != "income" && c.name != "marital stat") features.push_back(c.name);
    const TabularEncoder encoder(train, features);

    auto labels = [](const Table& t) {
        Matrix<T> y(2, t.rows);
        const TableColumn &income = t.column("income"), &marital = t.column("marital stat");
        for (Index r = 0; r < t.rows; ++r) {
            const std::string& inc = t.category(income, r);
            if (inc != "50000+" && inc != "- 50000")
                throw io_error(detail::concat("moe::load_census_income: '", t.path, "' row ", r + 1, " (non-empty line)",
                                              ": income is '", inc, "', expected '50000+' or '- 50000'"));
            y(0, r) = T(inc == "50000+");
            y(1, r) = T(t.category(marital, r) == "Never married");
        }
        return y;
    };

    CensusIncome<T> d;
    d.tasks = {binary_task("income"), binary_task("marital")};
    d.feature_names = encoder.feature_names();
    d.train.x = encoder.transform<T>(train);
    d.train.labels = labels(train);
    const Matrix<T> x = encoder.transform<T>(test), y = labels(test);
    std::vector<Index> order(static_cast<std::size_t>(test.rows));
    std::iota(order.begin(), order.end(), Index(0));
    Rng rng(split_seed);
    moe::shuffle(order.begin(), order.end(), rng);
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

}  // namespace moe
