// The data readers: tables (plain and .gz), the encoder, the Census-income loader (on census-like
// files written here, and on the real files when ../shared/data/census-income has them), malformed
// input, and the MMoE paper's synthetic generator.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <zlib.h>

#include "moe/data/census_income.hpp"
#include "moe/data/synthetic.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_data {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
namespace fs = std::filesystem;

using moe::testing::TempDir;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

void write_gz(const std::string& path, const std::string& text) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
    gzclose(f);
}

std::string read_bytes(const std::string& path) {
    std::string bytes(static_cast<std::size_t>(fs::file_size(path)), '\0');
    std::ifstream(path, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return bytes;
}

// The first line of census-income.data, as a list of its 42 fields.
std::vector<std::string> census_fields() {
    const std::string line =
        "73, Not in universe, 0, 0, High school graduate, 0, Not in universe, Widowed, Not in universe or children, "
        "Not in universe, White, All other, Female, Not in universe, Not in universe, Not in labor force, 0, 0, 0, "
        "Nonfiler, Not in universe, Not in universe, Other Rel 18+ ever marr not in subfamily, Other relative of "
        "householder, 1700.09, ?, ?, ?, Not in universe under 1 year old, ?, 0, Not in universe, United-States, "
        "United-States, United-States, Native- Born in the United States, 0, Not in universe, 2, 0, 95, - 50000";
    std::vector<std::string_view> views;
    split_fields(line, ", ", views);
    return std::vector<std::string>(views.begin(), views.end());
}

std::string census_line(int age, const std::string& marital, const std::string& race, const std::string& income,
                        const std::string& weight = "1700.09") {
    auto f = census_fields();
    f[0] = std::to_string(age);
    f[7] = marital;
    f[10] = race;
    f[24] = weight;
    f[41] = income;
    std::string s;
    for (std::size_t i = 0; i < f.size(); ++i) s += (i ? ", " : "") + f[i];
    return s + ".\n";
}

Index slot(const std::vector<std::string>& names, const std::string& name) {
    for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == name) return static_cast<Index>(i);
    FAIL("no feature named " << name);
    return -1;
}
}  // namespace

TEST_CASE("read_table: plain and .gz give the same columns; numbers, categories, missing values", "[data]") {
    TempDir dir("data_table");
    const std::string text = "1.5;red;x\n?;blue;y\r\n\n-2;red;z";  // a blank line, CRLF, no final newline
    write_text(dir.file("t.csv"), text);
    write_gz(dir.file("t.csv.gz"), text);
    const std::vector<ColumnSpec> cols{{"n", ColumnKind::numeric}, {"c", ColumnKind::categorical}, {"skip", ColumnKind::ignored}};
    TableFormat fmt;
    fmt.separator = ";";
    for (const char* name : {"t.csv", "t.csv.gz"}) {
        INFO(name);
        const Table t = read_table(dir.file(name), cols, fmt);
        REQUIRE(t.rows == 3);
        const auto& n = t.column("n");
        CHECK(n.numbers[0] == 1.5);
        CHECK(std::isnan(n.numbers[1]));
        CHECK(n.numbers[2] == -2.0);
        const auto& c = t.column("c");
        CHECK(c.values == std::vector<std::string>{"red", "blue"});
        CHECK(t.category(c, 2) == "red");
        CHECK(t.column("skip").codes.empty());
    }
    fmt.max_rows = 2;
    CHECK(read_table(dir.file("t.csv.gz"), cols, fmt).rows == 2);
    // Shards: data rows 0 and 2 for shard 0 of 2 (the blank line is not a row), row 1 for shard 1.
    fmt.max_rows = 0;
    fmt.shards = 2;
    const Table first = read_table(dir.file("t.csv.gz"), cols, fmt);
    REQUIRE(first.rows == 2);
    CHECK(first.column("n").numbers == std::vector<double>{1.5, -2.0});
    fmt.shard = 1;
    const Table second = read_table(dir.file("t.csv"), cols, fmt);
    REQUIRE(second.rows == 1);
    CHECK(second.category(second.column("c"), 0) == "blue");
    fmt.shard = 2;
    CHECK_THROWS_WITH(read_table(dir.file("t.csv"), cols, fmt), Catch::Matchers::Contains("shard 2 of 2 shards"));
}

TEST_CASE("TabularEncoder: sorted one-hot with an other slot, standardised numbers, missing as the mean", "[data]") {
    TempDir dir("data_encoder");
    write_text(dir.file("train.csv"), "1,b\n2,a\n3,b\n?,c\n");
    write_text(dir.file("test.csv"), "4,a\n?,d\n");
    const std::vector<ColumnSpec> cols{{"n", ColumnKind::numeric}, {"c", ColumnKind::categorical}};
    const Table train = read_table(dir.file("train.csv"), cols), test = read_table(dir.file("test.csv"), cols);
    const TabularEncoder enc(train, {"c", "n"});
    CHECK(enc.feature_names() == std::vector<std::string>{"c=a", "c=b", "c=c", "c=<other>", "n"});
    const Matrix<double> x = enc.transform<double>(test);
    REQUIRE(x.rows() == 5);
    REQUIRE(x.cols() == 2);
    CHECK(x.col(0).head(4) == Vector<double>::Unit(4, 0));  // a
    CHECK(x.col(1).head(4) == Vector<double>::Unit(4, 3));  // d: never seen in training -> other
    const double mean = 2.0, sd = std::sqrt(2.0 / 3.0);      // of 1, 2, 3 (the missing one left out)
    CHECK(x(4, 0) == Approx((4 - mean) / sd));
    CHECK(x(4, 1) == 0.0);
    CHECK(enc.transform<double>(train).row(4).sum() == Approx(0.0).margin(1e-12));
    CHECK_THROWS_WITH(TabularEncoder(train, {"nope"}), Contains("has no column 'nope'"));
}

TEST_CASE("FeatureEncoder: ID columns through vocabularies, bags of multi-valued cells, shared and hashed tables", "[data][features]") {
    TempDir dir("data_feature_encoder");
    // n: numeric; city: one id; tags: bags; item / last: share the items table; h: hashed.
    write_text(dir.file("train.csv"), "1,paris,a|b,i1,i2|i1,x\n2,rome,b,i2,,y\n3,paris,,i1,i3,x\n");
    write_text(dir.file("test.csv"), "4,oslo,b|zz|a,i3,i9|i1,q\n");
    const std::vector<ColumnSpec> cols{{"n", ColumnKind::numeric},     {"city", ColumnKind::categorical},
                                       {"tags", ColumnKind::categorical}, {"item", ColumnKind::categorical},
                                       {"last", ColumnKind::categorical}, {"h", ColumnKind::categorical}};
    const Table train = read_table(dir.file("train.csv"), cols), test = read_table(dir.file("test.csv"), cols);
    IdColumn city{"city", 3}, tags{"tags", 2, PoolingMode::mean, '|'}, item{"item", 4}, last{"last", 4, PoolingMode::mean, '|'},
        hashed{"h", 2};
    item.table = last.table = "items";
    hashed.hash_rows = 7;
    const FeatureEncoder enc(train, {"n"}, {city, tags, item, last, hashed});
    const FeatureSpec& spec = enc.spec();
    CHECK(spec.dense == 1);
    REQUIRE(spec.tables.size() == 4);
    CHECK(spec.tables[0].name == "city");
    CHECK(spec.tables[0].vocabulary == std::vector<std::string>{"paris", "rome"});  // most frequent first
    CHECK(spec.tables[1].vocabulary == std::vector<std::string>{"b", "a"});
    CHECK(spec.tables[2].name == "items");  // i1: 3 times (item twice, last once), i2: 2, i3: 1
    CHECK(spec.tables[2].vocabulary == std::vector<std::string>{"i1", "i2", "i3"});
    CHECK(spec.tables[2].rows == 4);
    CHECK(spec.tables[3].rows == 7);
    CHECK(spec.tables[3].vocabulary.empty());
    REQUIRE(spec.sparse.size() == 5);
    CHECK(spec.sparse[3].table == "items");
    CHECK(spec.sparse[1].pooling == PoolingMode::mean);
    CHECK(spec.width() == 1 + 3 + 2 + 4 + 4 + 2);

    const auto b = enc.transform<double>(train);
    CHECK(b.dense.cols() == 3);
    CHECK(b.sparse.at("city").ids == std::vector<std::int64_t>{1, 2, 1});
    CHECK(b.sparse.at("tags").ids == std::vector<std::int64_t>{2, 1, 1});
    CHECK(b.sparse.at("tags").offsets == std::vector<std::int64_t>{0, 2, 3, 3});  // the empty cell: an empty bag
    CHECK(b.sparse.at("last").ids == std::vector<std::int64_t>{2, 1, 3});
    CHECK(b.sparse.at("h").ids == std::vector<std::int64_t>{hashed_id("x", 7), hashed_id("y", 7), hashed_id("x", 7)});
    const auto t = enc.transform<float>(test);  // unseen values: the OOV id 0
    CHECK(t.sparse.at("city").ids == std::vector<std::int64_t>{0});
    CHECK(t.sparse.at("tags").ids == std::vector<std::int64_t>{1, 0, 2});
    CHECK(t.sparse.at("last").ids == std::vector<std::int64_t>{0, 1});
    CHECK(t.sparse.at("h").ids == std::vector<std::int64_t>{hashed_id("q", 7)});
    // The batch fits the spec: a FeatureInput takes it.
    FeatureInput<float> input(spec);
    CHECK(input.check(t) == 1);
    CHECK(input.vocabulary(0).id("rome") == 2);

    // min_count: rome (once) goes to the OOV id.
    IdColumn rare = city;
    rare.min_count = 2;
    CHECK(FeatureEncoder(train, {}, {rare}).spec().tables[0].vocabulary == std::vector<std::string>{"paris"});
    CHECK(FeatureEncoder(train, {}, {rare}).spec().dense == 0);

    // Bad settings name the column.
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {}), Contains("no columns to encode"));
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {IdColumn{"n", 2}}), Contains("ID column 'n'") && Contains("not read as categorical"));
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {IdColumn{"nope", 2}}), Contains("no column 'nope'"));
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {IdColumn{"city", 0}}), Contains("ID column 'city': dim must be positive"));
    IdColumn zero = city;
    zero.min_count = 0;
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {zero}), Contains("min_count must be >= 1"));
    IdColumn other_dim = last;
    other_dim.dim = 5;
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {item, other_dim}),
                      Contains("'item' and 'last' share table 'items' but not dim, hash_rows and min_count"));
    CHECK_THROWS_WITH(FeatureEncoder(train, {}, {city, city}), Contains("two ID features are called 'city'"));
}

TEST_CASE("load_census_income: labels, encoding, split, on census-like files", "[data][census]") {
    TempDir dir("data_census");
    std::string train, test;
    train += census_line(30, "Never married", "White", "- 50000", "100");
    train += census_line(50, "Divorced", "Black", "50000+", "2000");
    train += census_line(40, "Never married", "White", "50000+", "5");
    train += census_line(60, "Widowed", "?", "- 50000");
    for (int i = 0; i < 4; ++i) test += census_line(20 + i, i % 2 ? "Never married" : "Widowed", i ? "White" : "Eskimo",
                                                    i < 2 ? "50000+" : "- 50000");
    write_gz(dir.file("census-income.data.gz"), train);
    write_text(dir.file("census-income.test"), test);  // plain works too
    const auto files = find_census_income(dir.path.string());
    REQUIRE(files);
    const auto d = load_census_income<double>(files->first, files->second, 3);
    REQUIRE(d.tasks.size() == 2);
    CHECK(d.tasks[0].name == "income");
    CHECK(d.train.labels.row(0) == (Matrix<double>(1, 4) << 0, 1, 1, 0).finished());
    CHECK(d.train.labels.row(1) == (Matrix<double>(1, 4) << 1, 0, 1, 0).finished());
    const auto& names = d.feature_names;
    CHECK(d.train.x.rows() == static_cast<Index>(names.size()));
    for (const auto& n : names) {  // the labels and the sampling weight are not features
        CHECK(n.rfind("marital stat", 0) != 0);
        CHECK(n.rfind("income", 0) != 0);
        CHECK(n.rfind("instance weight", 0) != 0);
    }
    const Index age = slot(names, "age"), white = slot(names, "race=White"), other = slot(names, "race=<other>");
    CHECK(slot(names, "race=?") + 1 == slot(names, "race=Black"));  // "?" is a category of its own, sorted first
    CHECK(d.train.x.row(age).mean() == Approx(0.0).margin(1e-12));
    CHECK(std::sqrt(d.train.x.row(age).squaredNorm() / 4) == Approx(1.0));
    CHECK(d.train.x(white, 0) == 1.0);
    // Test file: 2 validation + 2 test rows; the "Eskimo" row is in one of them, in the other slot.
    REQUIRE(d.validation.size() == 2);
    REQUIRE(d.test.size() == 2);
    CHECK(d.validation.x.row(other).sum() + d.test.x.row(other).sum() == 1.0);
    CHECK(d.validation.labels.row(0).sum() + d.test.labels.row(0).sum() == 2.0);
    // Same seed, same split; the rows are all there once.
    const auto again = load_census_income<double>(files->first, files->second, 3);
    CHECK(again.validation.x == d.validation.x);
}

TEST_CASE("load_census_income_features: the categorical columns as ID features, the same labels and split", "[data][census][features]") {
    TempDir dir("data_census_features");
    std::string train, test;
    train += census_line(30, "Never married", "White", "- 50000");
    train += census_line(50, "Divorced", "Black", "50000+");
    train += census_line(40, "Never married", "White", "50000+");
    for (int i = 0; i < 4; ++i) test += census_line(20 + i, "Widowed", i ? "White" : "Eskimo", i < 2 ? "50000+" : "- 50000");
    write_text(dir.file("census-income.data"), train);
    write_text(dir.file("census-income.test"), test);
    const auto files = find_census_income(dir.path.string());
    REQUIRE(files);
    const auto d = load_census_income_features<double>(files->first, files->second, 3, 1, 3);
    const auto plain = load_census_income<double>(files->first, files->second, 3);
    CHECK(d.spec.dense == 7);  // the numeric columns
    CHECK(d.spec.sparse.size() == 32);  // the categorical ones but the two labels
    for (const auto& f : d.spec.sparse) CHECK((f.name != "income" && f.name != "marital stat"));
    const Index race = d.spec.table_index("race");
    REQUIRE(race >= 0);
    CHECK(d.spec.tables[std::size_t(race)].vocabulary == std::vector<std::string>{"White", "Black"});
    CHECK(d.spec.tables[std::size_t(race)].dim == 3);
    CHECK(d.train.labels == plain.train.labels);
    CHECK(d.validation.labels == plain.validation.labels);  // the same split
    CHECK(d.test.labels == plain.test.labels);
    // "Eskimo" is in validation or test, with the OOV id.
    const auto& vr = d.validation.features.sparse.at("race").ids;
    const auto& tr = d.test.features.sparse.at("race").ids;
    CHECK(std::count(vr.begin(), vr.end(), 0) + std::count(tr.begin(), tr.end(), 0) == 1);
    FeatureInput<double> input(d.spec);
    d.train.check(input, d.tasks, "train");
    d.test.check(input, d.tasks, "test");
}

TEST_CASE("Malformed tables and census files: io_error with the file and the line", "[data][errors]") {
    TempDir dir("data_bad");
    const auto cols = census_income_columns();
    const auto fmt = census_income_format();
    std::string good = census_line(30, "Never married", "White", "- 50000") + census_line(31, "Divorced", "White", "50000+");

    write_text(dir.file("fields.csv"), good + "1, 2, 3.\n");
    CHECK_THROWS_WITH(read_table(dir.file("fields.csv"), cols, fmt),
                      Contains("fields.csv' line 3: 3 fields, expected 42 separated by ', '"));

    std::string bad_number = good + census_line(30, "Never married", "White", "- 50000");
    bad_number.replace(bad_number.rfind("\n30, ") + 1, 2, "3x");
    write_text(dir.file("number.csv"), bad_number);
    CHECK_THROWS_WITH(read_table(dir.file("number.csv"), cols, fmt),
                      Contains("number.csv' line 3, column 0 ('age'): '3x' is not a finite number"));

    std::string more;
    for (int i = 0; i < 2000; ++i) more += good;
    write_gz(dir.file("whole.gz"), more);
    const std::string bytes = read_bytes(dir.file("whole.gz"));
    write_text(dir.file("truncated.gz"), bytes.substr(0, bytes.size() / 2));
    CHECK(read_table(dir.file("whole.gz"), cols, fmt).rows == 4000);
    CHECK_THROWS_WITH(read_table(dir.file("truncated.gz"), cols, fmt),
                      Contains("truncated.gz' is corrupt or truncated after line"));
    std::string flipped = bytes;
    flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
    write_text(dir.file("corrupt.gz"), flipped);
    CHECK_THROWS_AS(read_table(dir.file("corrupt.gz"), cols, fmt), io_error);

    CHECK_THROWS_WITH(read_table(dir.file("missing.csv"), cols, fmt), Contains("cannot open") && Contains("missing.csv"));

    // A NUL byte once ended the line early, so two lines merged into one row and later line numbers
    // shifted; now it names its line (plain and .gz alike).
    std::string nul = good + good;
    nul.insert(nul.find('\n', good.size()) - 5, 1, '\0');  // inside line 3
    write_text(dir.file("nul.csv"), nul);
    write_gz(dir.file("nul.csv.gz"), nul);
    for (const char* name : {"nul.csv", "nul.csv.gz"})
        CHECK_THROWS_WITH(read_table(dir.file(name), cols, fmt), Contains(std::string(name) + "' line 3 holds a NUL byte at column"));
    // Lines longer than the reader's buffer, CRLF endings and a last line without a newline.
    const std::string long_line(200000, 'x');
    write_text(dir.file("lines.txt"), "a\r\n" + long_line + "\n\nlast");
    LineReader reader(dir.file("lines.txt"));
    std::string line;
    std::vector<std::string> lines;
    while (reader.next(line)) lines.push_back(line);
    CHECK(lines == std::vector<std::string>{"a", long_line, "", "last"});
    CHECK(reader.line_number() == 4);

    std::string bad_label = census_line(30, "Never married", "White", "maybe");
    write_text(dir.file("label.csv"), good + bad_label);
    CHECK_THROWS_WITH(load_census_income<float>(dir.file("label.csv"), dir.file("label.csv")),
                      Contains("label.csv' row 3 (non-empty line): income is 'maybe'"));
    write_text(dir.file("empty.csv"), "");
    CHECK_THROWS_WITH(load_census_income<float>(dir.file("empty.csv"), dir.file("label.csv")),
                      Contains("empty.csv' has 0 rows"));
    CHECK_FALSE(find_census_income(dir.file("nowhere")));
}

TEST_CASE("Census-income: the real files, when present", "[data][census]") {
    const auto files = find_census_income(MOE_SHARED_DIR "/data/census-income");
    if (!files) {
        WARN("skipped: the Census-income files are not in " MOE_SHARED_DIR "/data/census-income");
        return;
    }
    const auto d = load_census_income<float>(files->first, files->second);
    CHECK(d.train.size() == 199523);
    CHECK(d.validation.size() + d.test.size() == 99762);
    CHECK(d.validation.size() == 49881);
    // The README's label rates: income 6.21% and never married 43.35% positive in training.
    CHECK(d.train.labels.row(0).mean() == Approx(0.0621).margin(0.0001));
    CHECK(d.train.labels.row(1).mean() == Approx(0.4335).margin(0.0001));
    // One slot set per categorical column: 42 columns less 7 numeric, the weight and the 2 labels.
    for (Index j = 0; j < 1000; ++j) {
        Index ones = 0;
        for (std::size_t f = 0; f < d.feature_names.size(); ++f)
            if (d.feature_names[f].find('=') != std::string::npos) ones += d.train.x(static_cast<Index>(f), j) == 1.0f;
        CHECK(ones == 32);
    }
    d.train.check(d.train.x.rows(), d.tasks, "census train");
}

TEST_CASE("Synthetic tasks: shapes, seeds, and the correlation knob", "[data][synthetic]") {
    SyntheticOptions o;
    o.samples = 4000;
    o.dim = 20;
    auto corr = [](const MultiTaskData<double>& d) {
        const Vector<double> a = d.labels.row(0).transpose().array() - d.labels.row(0).mean();
        const Vector<double> b = d.labels.row(1).transpose().array() - d.labels.row(1).mean();
        return a.dot(b) / (a.norm() * b.norm());
    };
    double last = -2;
    for (double p : {0.0, 0.5, 0.9}) {
        o.correlation = p;
        const auto d = make_synthetic_tasks<double>(o);
        REQUIRE(d.x.rows() == 20);
        REQUIRE(d.labels.rows() == 2);
        CHECK(corr(d) > last);
        last = corr(d);
    }
    o.correlation = 1.0;
    const auto same = make_synthetic_tasks<double>(o);
    CHECK((same.labels.row(0) - same.labels.row(1)).cwiseAbs().maxCoeff() < 0.1);  // only the noise differs
    CHECK(make_synthetic_tasks<double>(o).labels == same.labels);
    SyntheticOptions test = o;
    test.sample_seed = 2;
    CHECK(make_synthetic_tasks<double>(test).labels != same.labels);
    o.preset = SyntheticPreset::fixed_sines;
    CHECK(make_synthetic_tasks<double>(o).labels != same.labels);
    o.correlation = 1.5;
    CHECK_THROWS_WITH(make_synthetic_tasks<double>(o), Contains("correlation must be in [-1, 1], got 1.5"));
}

}  // namespace test_data
