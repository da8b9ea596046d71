// MultiheadAttention: PyTorch parity (tools/make_mha_reference.py: nn.MultiheadAttention with a
// causal mask, a key padding mask, both, and sequences longer than a key block; outputs, dx and
// every parameter's gradient), gradient checks with dropout (mask frozen), evaluation without
// dropout, a query with no key, and bad input.
#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_multihead_attention {

using namespace moe;
using Catch::Matchers::Contains;

TEMPLATE_TEST_CASE("MultiheadAttention matches nn.MultiheadAttention: masks, long sequences, every gradient", "[layers][attention][parity]",
                   float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(moe::testing::fixture_path(std::string("mha_") +
                                                                          (std::is_same_v<T, double> ? "f64" : "f32") + ".safetensors"));
    struct Case {
        const char* name;
        Index seq;
        bool causal;
    };
    for (const Case& c : {Case{"plain", 5, false}, Case{"causal", 5, true}, Case{"padded", 5, false}, Case{"causal_padded", 5, true},
                          Case{"long", 70, true}}) {
        INFO(c.name);
        const std::string n = c.name;
        MultiheadAttention<T> mha(8, 2, 0.0, c.causal);
        ParameterStore<T> store;
        store.bind(mha);
        for (const auto& e : store.entries()) store.value(e.name) = f.at("param." + e.name).template matrix<T>();
        std::vector<std::uint8_t> padding;
        if (f.contains(n + ".padding"))
            for (std::int64_t v : f.at(n + ".padding").template values<std::int64_t>()) padding.push_back(std::uint8_t(v));
        const Matrix<T> x = f.at(n + ".x").template batch<T>(), dy = f.at(n + ".dy").template batch<T>();
        MOE_CHECK_CLOSE(Matrix<T>(mha.forward(x, c.seq, padding)), f.at(n + ".y").template batch<T>(), T);
        store.zero_grad();
        MOE_CHECK_CLOSE(Matrix<T>(mha.backward(dy)), f.at(n + ".dx").template batch<T>(), T);
        for (const auto& e : store.entries()) {
            INFO(e.name);
            MOE_CHECK_CLOSE(Matrix<T>(store.grad(e.name)), f.at(n + ".grad." + e.name).template matrix<T>(), T);
        }
    }
}

namespace {
/// The layer with its sequence length and padding mask bound: forward(x) as check_layer calls it.
struct AttentionOn {
    MultiheadAttention<double>& m;
    Index seq;
    const std::vector<std::uint8_t>& pad;
    const MatrixView<double>& forward(const ConstView<double>& in) { return m.forward(in, seq, pad); }
    const MatrixView<double>& backward(const ConstView<double>& dy) { return m.backward(dy); }
    template <class F>
    void for_each_parameter(const std::string& p, F&& fn) {
        m.for_each_parameter(p, fn);
    }
};
}  // namespace

TEST_CASE("MultiheadAttention: gradients with masks and dropout, over several key blocks", "[layers][attention][gradcheck]") {
    struct Case {
        Index seq;
        bool causal;
        double dropout;
        bool padded;
    };
    for (const Case& c : {Case{4, false, 0.0, false}, Case{4, true, 0.3, true}, Case{67, true, 0.2, false}}) {
        INFO("seq " << c.seq << " causal " << c.causal << " dropout " << c.dropout);
        MultiheadAttention<double> mha(6, 3, c.dropout, c.causal);
        std::vector<std::uint8_t> padding;
        if (c.padded) padding = {0, 0, 0, 1, 0, 0, 1, 1};
        ParameterStore<double> store;
        store.bind(mha);
        Rng rng(3);
        mha.reset_parameters(rng);
        mha.freeze_mask(true);
        const Index b = c.seq == 4 ? 2 : 1;
        Matrix<double> x = moe::testing::random_matrix(6, b * c.seq, 5);
        AttentionOn bound{mha, c.seq, padding};
        const auto r = moe::testing::check_layer(bound, store, x);
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
    }
}

TEST_CASE("MultiheadAttention: evaluation has no dropout; a query with no key gets zeros; bad input", "[layers][attention][errors]") {
    MultiheadAttention<double> mha(4, 2, 0.5, true);
    ParameterStore<double> store;
    store.bind(mha);
    Rng rng(1);
    mha.reset_parameters(rng);
    const Matrix<double> x = moe::testing::random_matrix(4, 6, 2);
    mha.set_training(false);
    const Matrix<double> a = mha.forward(x, 3), b = mha.forward(x, 3);
    CHECK(a == b);
    mha.set_training(true);
    CHECK((Matrix<double>(mha.forward(x, 3)) - a).norm() > 0);  // dropout on
    // Causal, and the first key of sequence 0 is padding: its first query has nothing to attend to.
    mha.set_training(false);
    const std::vector<std::uint8_t> pad = {1, 0, 0, 0, 0, 0};
    const Matrix<double> y = mha.forward(x, 3, pad);
    CHECK(y.allFinite());
    CHECK((y.col(0) - Matrix<double>(store.value("out_proj.bias"))).norm() < 1e-15);  // zeros through out_proj

    CHECK_THROWS_WITH(MultiheadAttention<double>(6, 4), Contains("dim 6 is not divisible by heads 4"));
    CHECK_THROWS_WITH(MultiheadAttention<double>(4, 2, 1.0), Contains("dropout must be in [0, 1), got 1"));
    CHECK_THROWS_WITH(mha.forward(x, 4), Contains("6 tokens are not whole sequences of 4"));
    const std::vector<std::uint8_t> short_pad = {0, 0};
    CHECK_THROWS_AS(mha.forward(x, 3, short_pad), shape_error);
    const Matrix<double> wrong = Matrix<double>::Zero(5, 6);
    CHECK_THROWS_AS(mha.forward(wrong, 3), shape_error);
}

TEST_CASE("MultiheadAttention: the same bits on 1 and 2 threads (heads run on the threads)", "[layers][attention][threads]") {
#ifdef _OPENMP
    const int before = omp_get_max_threads();
    const bool forced = moe::detail::always_parallel();
    moe::detail::always_parallel() = true;  // thread even this small case
    auto run = [](int threads) {
        omp_set_num_threads(threads);
        MultiheadAttention<double> mha(8, 4, 0.2, true);
        ParameterStore<double> store;
        store.bind(mha);
        Rng rng(2);
        mha.reset_parameters(rng);
        const Matrix<double> x = moe::testing::random_matrix(8, 3 * 70, 4), dy = moe::testing::random_matrix(8, 3 * 70, 5);
        Matrix<double> out = mha.forward(x, 70);
        store.zero_grad();
        const Matrix<double> dx = mha.backward(dy);
        out.conservativeResize(out.rows(), out.cols() + dx.cols());
        out.rightCols(dx.cols()) = dx;
        return std::make_pair(out, Vector<double>(store.grads()));
    };
    const auto one = run(1), two = run(2);
    omp_set_num_threads(before);
    moe::detail::always_parallel() = forced;
    CHECK(one.first == two.first);
    CHECK(one.second == two.second);
#else
    WARN("skipped: built without OpenMP");
#endif
}

}  // namespace test_multihead_attention
