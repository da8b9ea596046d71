// EmbeddingBag, Embedding, SparseAdam and SparseAdagrad: pooling against a naive loop in every mode,
// gradient checks of the tables (weights, padding, empty and repeated ids), bad input, SparseAdam
// against its formula, and parity with PyTorch 1.13 (tools/make_embedding_reference.py).
#include <algorithm>
#include <cmath>

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/gradcheck.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_embedding {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
/// Five bags over a table of 7 rows: repeated ids, an empty bag, id 0 (the padding row when padding
/// is on) in two bags, weights per id.
Bags<double> sample_bags(bool weighted) {
    Bags<double> b = Bags<double>::from_lengths({3, 1, 3, 6, 0, 2, 0, 5, 5, 5}, {3, 0, 1, 2, 4});
    if (weighted) b.weights = {0.5, -1.0, 2.0, 1.5, 0.25, 3.0, -0.5, 1.0, 2.0, 0.75};
    return b;
}

/// The pooled bag b, written out from the definition.
Vector<double> naive_bag(const EmbeddingBag<double>& e, const Bags<double>& bags, Index b) {
    Vector<double> acc = Vector<double>::Zero(e.dim());
    Index count = 0;
    for (std::int64_t p = bags.offsets[std::size_t(b)]; p < bags.offsets[std::size_t(b) + 1]; ++p) {
        const std::int64_t id = bags.ids[std::size_t(p)];
        if (e.padding_idx() && id == *e.padding_idx()) continue;
        const Vector<double> row = e.table().col(Index(id));
        const double w = bags.weights.empty() ? 1.0 : bags.weights[std::size_t(p)];
        if (e.mode() == PoolingMode::max)
            acc = count == 0 ? row : Vector<double>(acc.cwiseMax(row));
        else
            acc += w * row;
        ++count;
    }
    if (e.mode() == PoolingMode::mean && count > 0) acc /= double(count);
    return acc;
}

EmbeddingBag<double> table(PoolingMode mode, std::optional<std::int64_t> padding) {
    EmbeddingBag<double> e(7, 4, mode, padding);
    Rng rng(11);
    e.reset_parameters(rng);
    return e;
}

/// Central differences of sum(r .* forward(bags)) with respect to every table entry, against backward(r).
double gradcheck_table(EmbeddingBag<double>& e, const Bags<double>& bags) {
    const Matrix<double> r = moe::testing::random_matrix(e.dim(), bags.size(), 3);
    e.forward(bags);
    const RowSparseGrad<double>& g = e.backward(r);
    std::vector<double> dense(std::size_t(e.table().size()), 0.0);
    for (std::size_t j = 0; j < g.rows.size(); ++j)
        for (Index i = 0; i < e.dim(); ++i) dense[std::size_t(g.rows[j] * e.dim() + i)] = g.values.view()(i, Index(j));
    std::vector<moe::testing::Probe> probes{{"table", e.table().data(), dense}};
    auto loss = [&] { return e.forward(bags).cwiseProduct(r).sum(); };
    const auto result = moe::testing::check_gradients(loss, probes);
    INFO(result.worst);
    return result.max_error;
}
}  // namespace

TEST_CASE("EmbeddingBag pools as the definition in every mode", "[embedding]") {
    for (PoolingMode mode : {PoolingMode::sum, PoolingMode::mean, PoolingMode::max})
        for (bool padding : {false, true}) {
            INFO(to_string(mode) << (padding ? ", padding_idx 0" : ""));
            EmbeddingBag<double> e = table(mode, padding ? std::optional<std::int64_t>(0) : std::nullopt);
            if (padding) CHECK(e.table().col(0).isZero());
            const Bags<double> bags = sample_bags(mode == PoolingMode::sum);
            const MatrixView<double>& y = e.forward(bags);
            REQUIRE(y.rows() == 4);
            REQUIRE(y.cols() == 5);
            for (Index b = 0; b < 5; ++b) CHECK((y.col(b) - naive_bag(e, bags, b)).cwiseAbs().maxCoeff() < 1e-15);
            CHECK(y.col(1).isZero());  // the empty bag
            Buffer<double> out;
            CHECK(e.infer(bags, out) == y);
        }
}

TEST_CASE("EmbeddingBag: gradient checks of the table", "[embedding][gradcheck]") {
    for (PoolingMode mode : {PoolingMode::sum, PoolingMode::mean, PoolingMode::max})
        for (bool padding : {false, true}) {
            INFO(to_string(mode) << (padding ? ", padding_idx -7 (row 0)" : ""));
            EmbeddingBag<double> e = table(mode, padding ? std::optional<std::int64_t>(-7) : std::nullopt);
            const Bags<double> bags = sample_bags(mode == PoolingMode::sum);
            CHECK(gradcheck_table(e, bags) < 1e-6);
            // Only the rows the bags touched, sorted; the padding row never.
            const RowSparseGrad<double>& g = e.backward(moe::testing::random_matrix(4, 5, 4));
            const std::vector<std::int64_t> touched =
                padding ? std::vector<std::int64_t>{1, 2, 3, 5, 6} : std::vector<std::int64_t>{0, 1, 2, 3, 5, 6};
            CHECK(g.rows == touched);
            CHECK(g.values.cols() == Index(touched.size()));
        }
}

TEST_CASE("IdSorter: the radix sort gives (id, position) order, as a comparison sort does", "[embedding]") {
    Rng rng(5);
    detail::IdSorter sorter;
    for (const std::int64_t range : {std::int64_t(3), std::int64_t(5000), std::int64_t(1) << 40}) {
        for (const std::size_t n : {std::size_t(10), std::size_t(255), std::size_t(256), std::size_t(5000)}) {
            std::vector<std::int64_t> ids(n), order, expected;
            for (auto& id : ids) id = std::int64_t(rng.uniform() * double(range)) % range;
            for (std::size_t p = 0; p < n; p += 1 + (p % 3 == 0)) order.push_back(std::int64_t(p));  // some positions left out
            expected = order;
            std::stable_sort(expected.begin(), expected.end(),
                             [&](std::int64_t x, std::int64_t y) { return ids[std::size_t(x)] < ids[std::size_t(y)]; });
            sorter.sort(ids, order);
            INFO("range " << range << ", " << n << " ids");
            CHECK(order == expected);
        }
    }
}

TEST_CASE("EmbeddingBag: a batch of thousands of ids (the radix sort's path) gets the summed rows' gradients", "[embedding]") {
    EmbeddingBag<double> e(300, 3, PoolingMode::mean, 7);
    Rng rng(9);
    e.reset_parameters(rng);
    std::vector<std::int64_t> ids, lengths;
    for (int b = 0; b < 400; ++b) {
        lengths.push_back(b % 11);
        for (int k = 0; k < b % 11; ++k) ids.push_back(std::int64_t(rng.uniform() * 300) % 300);
    }
    const auto bags = Bags<double>::from_lengths(ids, lengths);
    const Matrix<double> dy = moe::testing::random_matrix(3, 400, 4);
    e.forward(bags);
    const RowSparseGrad<double>& g = e.backward(dy);
    Matrix<double> expected = Matrix<double>::Zero(3, 300);  // the definition, written out
    for (Index b = 0; b < 400; ++b) {
        Index count = 0;
        for (auto p = bags.offsets[std::size_t(b)]; p < bags.offsets[std::size_t(b) + 1]; ++p) count += bags.ids[std::size_t(p)] != 7;
        for (auto p = bags.offsets[std::size_t(b)]; p < bags.offsets[std::size_t(b) + 1]; ++p)
            if (bags.ids[std::size_t(p)] != 7) expected.col(Index(bags.ids[std::size_t(p)])) += dy.col(b) / double(count);
    }
    Matrix<double> got = Matrix<double>::Zero(3, 300);
    for (std::size_t j = 0; j < g.rows.size(); ++j) {
        CHECK((j == 0 || g.rows[j] > g.rows[j - 1]));
        got.col(Index(g.rows[j])) = g.values.view().col(Index(j));
    }
    CHECK((got - expected).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(std::find(g.rows.begin(), g.rows.end(), 7) == g.rows.end());  // the padding row gets nothing
}

TEST_CASE("EmbeddingBag: bad bags name the layer and the value, and change nothing", "[embedding][errors]") {
    EmbeddingBag<double> e(7, 4, PoolingMode::mean, std::nullopt, "item_table");
    Rng rng(1);
    e.reset_parameters(rng);
    const Bags<double> good = sample_bags(false);
    const Matrix<double> y = e.forward(good);
    auto bad = [&](auto edit) {
        Bags<double> b = good;
        edit(b);
        return b;
    };
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.ids[2] = 7; })),
                      Contains("item_table") && Contains("id 7 at position 2") && Contains("7 rows"));
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.ids[0] = -1; })), Contains("id -1"));
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.offsets[2] = 2; })), Contains("must not decrease"));
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.offsets.back() = 11; })),
                      Contains("last offset is 11") && Contains("10 ids"));
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.offsets[0] = 1; })), Contains("start with 0"));
    CHECK_THROWS_WITH(e.forward(bad([](Bags<double>& b) { b.weights.assign(10, 1.0); })), Contains("need mode sum"));
    EmbeddingBag<double> s(7, 4, PoolingMode::sum);
    CHECK_THROWS_WITH(s.forward(bad([](Bags<double>& b) { b.weights.assign(9, 1.0); })), Contains("9 weights for 10 ids"));
    CHECK_THROWS_WITH(s.forward(bad([](Bags<double>& b) {
                          b.weights.assign(10, 1.0);
                          b.weights[4] = std::nan("");
                      })),
                      Contains("weight of id 0 at position 4"));
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2}, {1, 2}), Contains("sum to more than the 2 ids"));
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2}, {1}), Contains("sum to 1 but there are 2 ids"));
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2}, {1, -1}), Contains("length 1 is -1, negative"));
    CHECK_THROWS_AS(EmbeddingBag<double>(7, 4, PoolingMode::sum, 7), config_error);
    CHECK_THROWS_AS(EmbeddingBag<double>(0, 4), config_error);
    CHECK_THROWS_WITH(pooling_mode_from_string("avg"), Contains("unknown pooling mode 'avg'"));
    // The failed calls left the last good forward in place.
    CHECK(e.forward(good) == y);
    const Matrix<double> wrong_shape = Matrix<double>::Zero(4, 4);
    CHECK_THROWS_WITH(e.backward(wrong_shape), Contains("item_table::backward") && Contains("4 x 5"));
}

TEST_CASE("SparseAdam: torch.optim.SparseAdam's update on the touched rows only", "[embedding][optim]") {
    EmbeddingBag<double> e = table(PoolingMode::sum, std::nullopt);
    SparseAdamOptions o;
    o.lr = 0.01;
    SparseAdam<double> adam(e, o);
    const Matrix<double> before = e.table();
    Matrix<double> m = Matrix<double>::Zero(4, 7), v = m, expected = before;
    const Bags<double> bags = sample_bags(true);
    for (int step = 1; step <= 3; ++step) {
        e.forward(bags);
        const RowSparseGrad<double>& g = e.backward(moe::testing::random_matrix(4, 5, std::uint64_t(step)));
        const double size = o.lr * std::sqrt(1 - std::pow(o.beta2, step)) / (1 - std::pow(o.beta1, step));
        for (std::size_t j = 0; j < g.rows.size(); ++j)
            for (Index i = 0; i < 4; ++i) {
                const Index r = Index(g.rows[j]);
                const double gi = g.values.view()(i, Index(j));
                m(i, r) = o.beta1 * m(i, r) + (1 - o.beta1) * gi;
                v(i, r) = o.beta2 * v(i, r) + (1 - o.beta2) * gi * gi;
                expected(i, r) -= size * m(i, r) / (std::sqrt(v(i, r)) + o.eps);
            }
        adam.step(e, g);
    }
    CHECK(adam.steps() == 3);
    CHECK((e.table() - expected).cwiseAbs().maxCoeff() < 1e-14);
    CHECK((adam.exp_avg() - m).cwiseAbs().maxCoeff() < 1e-14);
    CHECK(e.table().col(4) == before.col(4));  // row 4 is in no bag
    CHECK(adam.exp_avg_sq().col(4).isZero());
    // A gradient that does not fit the table changes nothing.
    RowSparseGrad<double> wrong;
    wrong.rows = {2, 9};
    wrong.values.zeros(4, 2);
    const Matrix<double> kept = e.table();
    CHECK_THROWS_WITH(adam.step(e, wrong), Contains("gradient row 9"));
    CHECK(e.table() == kept);
    CHECK(adam.steps() == 3);
}

TEMPLATE_TEST_CASE("PyTorch parity: EmbeddingBag and SparseAdam", "[embedding][parity]", float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(
        moe::testing::fixture_path(std::is_same_v<T, double> ? "embedding_f64.safetensors" : "embedding_f32.safetensors"));
    Bags<T> bags;
    bags.ids = f.at("ids").values<std::int64_t>();
    bags.offsets = f.at("offsets").values<std::int64_t>();
    const std::vector<T> weights = f.at("weights").values<T>();
    const Matrix<T> dy1 = f.at("dy1").batch<T>(), dy2 = f.at("dy2").batch<T>();
    const std::pair<const char*, PoolingMode> cases[] = {{"sum", PoolingMode::sum},      {"sum_weighted", PoolingMode::sum},
                                                         {"sum_pad", PoolingMode::sum},  {"mean", PoolingMode::mean},
                                                         {"mean_pad", PoolingMode::mean}, {"max", PoolingMode::max},
                                                         {"max_pad", PoolingMode::max}};
    for (const auto& [name, mode] : cases) {
        const std::string c = name;
        INFO(c);
        const bool padded = c.find("_pad") != std::string::npos;
        bags.weights = c == "sum_weighted" ? weights : std::vector<T>{};
        EmbeddingBag<T> e(9, 5, mode, padded ? std::optional<std::int64_t>(2) : std::nullopt);
        e.table() = f.at("table").batch<T>();  // the padding row is not zero: it must be left out
        MOE_CHECK_CLOSE(Matrix<T>(e.forward(bags)), f.at(c + ".y").batch<T>(), T);
        const RowSparseGrad<T>& g = e.backward(dy1);
        Matrix<T> dense = Matrix<T>::Zero(5, 9);
        for (std::size_t j = 0; j < g.rows.size(); ++j) dense.col(Index(g.rows[j])) = g.values.view().col(Index(j));
        MOE_CHECK_CLOSE(dense, f.at(c + ".grad").batch<T>(), T);
        if (mode == PoolingMode::max) continue;  // PyTorch has no sparse gradient in max mode
        SparseAdamOptions o;
        o.lr = 0.01;
        SparseAdam<T> adam(e, o);
        adam.step(e, g);
        e.forward(bags);
        adam.step(e, e.backward(dy2));
        MOE_CHECK_CLOSE(e.table(), f.at(c + ".adam2").batch<T>(), T);
    }
}

TEST_CASE("Embedding: one row per id, the padding row included, gradient check, bad ids", "[embedding]") {
    Embedding<double> e(7, 3, 2, "history");
    Rng rng(4);
    e.reset_parameters(rng);
    CHECK(e.table().col(2).isZero());
    e.table().col(2).setConstant(0.5);  // PyTorch returns the padding row as it is
    const std::vector<std::int64_t> ids{3, 2, 6, 3, 0};
    const MatrixView<double>& y = e.forward(ids);
    REQUIRE(y.cols() == 5);
    for (Index j = 0; j < 5; ++j) CHECK(y.col(j) == e.table().col(Index(ids[std::size_t(j)])));
    const Matrix<double> r = moe::testing::random_matrix(3, 5, 9);
    const RowSparseGrad<double>& g = e.backward(r);
    CHECK(g.rows == std::vector<std::int64_t>{0, 3, 6});  // the padding row gets no gradient
    CHECK((g.values.view().col(1) - (r.col(0) + r.col(3))).cwiseAbs().maxCoeff() < 1e-15);
    std::vector<double> dense(std::size_t(e.table().size()), 0.0);
    for (std::size_t j = 0; j < g.rows.size(); ++j)
        for (Index i = 0; i < 3; ++i) dense[std::size_t(g.rows[j] * 3 + i)] = g.values.view()(i, Index(j));
    for (Index i = 0; i < 3; ++i) dense[std::size_t(2 * 3 + i)] = 0.0;
    std::vector<moe::testing::Probe> probes{{"table", e.table().data(), dense}};
    // The padding row's entries do change the loss but get no gradient, as in PyTorch: probe the others.
    auto loss = [&] {
        Matrix<double> masked = r;
        for (Index j = 0; j < 5; ++j)
            if (ids[std::size_t(j)] == 2) masked.col(j).setZero();
        return e.forward(ids).cwiseProduct(masked).sum();
    };
    CHECK(moe::testing::check_gradients(loss, probes).max_error < 1e-6);
    const std::vector<std::int64_t> bad{1, 7};
    CHECK_THROWS_WITH(e.forward(bad), Contains("history") && Contains("id 7 at position 1"));
    CHECK_THROWS_AS(Embedding<double>(7, 3, -8), config_error);
}

TEST_CASE("SparseAdagrad: element-wise and row-wise, bad settings", "[embedding][optim]") {
    SparseAdagradOptions o;
    o.lr = -1;
    CHECK_THROWS_WITH(SparseAdagrad<double>(7, 4, o), Contains("lr must be finite and >= 0"));
    CHECK_THROWS_WITH(SparseAdagrad<double>(7, -1), Contains("rows and dim must be positive"));
    CHECK_THROWS_WITH(SparseAdam<double>(0, 4), Contains("rows and dim must be positive"));
    o = {};
    o.rowwise = true;
    SparseAdagrad<double> rowwise(7, 4, o);
    CHECK(rowwise.state_sum().rows() == 1);
    CHECK(rowwise.state_sum().cols() == 7);
}

TEMPLATE_TEST_CASE("PyTorch parity: Embedding and Adagrad", "[embedding][parity]", float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(
        moe::testing::fixture_path(std::is_same_v<T, double> ? "embedding_f64.safetensors" : "embedding_f32.safetensors"));
    const std::vector<std::int64_t> ids = f.at("ids").values<std::int64_t>();
    Embedding<T> seq(9, 5, 2);
    seq.table() = f.at("table").batch<T>();
    MOE_CHECK_CLOSE(Matrix<T>(seq.forward(ids)), f.at("embedding.y").batch<T>(), T);
    const RowSparseGrad<T>& g = seq.backward(f.at("embedding.dy").batch<T>());
    Matrix<T> dense = Matrix<T>::Zero(5, 9);
    for (std::size_t j = 0; j < g.rows.size(); ++j) dense.col(Index(g.rows[j])) = g.values.view().col(Index(j));
    MOE_CHECK_CLOSE(dense, f.at("embedding.grad").batch<T>(), T);

    Bags<T> bags;
    bags.ids = ids;
    bags.offsets = f.at("offsets").values<std::int64_t>();
    bags.weights = f.at("weights").values<T>();
    for (bool rowwise : {false, true}) {
        INFO((rowwise ? "row-wise" : "element-wise"));
        EmbeddingBag<T> e(9, 5, PoolingMode::sum);
        e.table() = f.at("table").batch<T>();
        SparseAdagradOptions o;
        o.lr = 0.1;
        o.lr_decay = 0.01;
        o.rowwise = rowwise;
        SparseAdagrad<T> adagrad(e, o);
        for (const char* dy : {"dy1", "dy2"}) {
            e.forward(bags);
            adagrad.step(e, e.backward(f.at(dy).batch<T>()));
        }
        MOE_CHECK_CLOSE(e.table(), f.at(rowwise ? "rowwise_adagrad.table2" : "adagrad.table2").batch<T>(), T);
    }
}

}  // namespace test_embedding
