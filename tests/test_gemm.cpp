// The GEMM interface (detail/gemm.hpp) against a plain sum in double, on whichever backend the
// suite is built with: gemm (tiles, depth split), gemm_many, and gemm_reductions (the weight
// gradients: wide tiles, depth chunks), and the promise they make: the same bits on any number of
// threads, and, for gemm_reductions, whichever products share a call.
#include <vector>

#include "support/catch.hpp"
#include "support/forced_threads.hpp"
#include "support/gradcheck.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_gemm {

using namespace moe;
using detail::GemmArgs;

namespace {

/// One product's operands and output, column-major, with op(A) m x k and op(B) k x n.
struct Case {
    bool trans_a, trans_b;
    Index m, n, k;
    bool accumulate;
    Matrix<float> a, b, c0;  // c0: C before the product

    Case(bool ta, bool tb, Index m_, Index n_, Index k_, bool acc, std::uint64_t seed)
        : trans_a(ta), trans_b(tb), m(m_), n(n_), k(k_), accumulate(acc),
          a(moe::testing::random_matrix(ta ? k_ : m_, ta ? m_ : k_, seed).cast<float>()),
          b(moe::testing::random_matrix(tb ? n_ : k_, tb ? k_ : n_, seed + 1).cast<float>()),
          c0(moe::testing::random_matrix(m_, n_, seed + 2).cast<float>()) {}

    GemmArgs<float> args(Matrix<float>& c) const {
        return {trans_a, trans_b, m, n, k, 1.0f, a.data(), a.rows(), b.data(), b.rows(), accumulate, c.data(), c.rows()};
    }
    /// C as a plain sum in double, and the bound on float's error of it.
    void expected(Matrix<double>& c, Matrix<double>& bound) const {
        const Matrix<double> oa = trans_a ? Matrix<double>(a.cast<double>().transpose()) : a.cast<double>();
        const Matrix<double> ob = trans_b ? Matrix<double>(b.cast<double>().transpose()) : b.cast<double>();
        c = oa * ob;
        bound = oa.cwiseAbs() * ob.cwiseAbs();
        if (accumulate) {
            c += c0.cast<double>();
            bound += c0.cast<double>().cwiseAbs();
        }
        bound *= 1e-5;
        bound.array() += 1e-6;
    }
};

void check_close(const Case& p, const Matrix<float>& c) {
    Matrix<double> want, bound;
    p.expected(want, bound);
    REQUIRE(c.rows() == p.m);
    REQUIRE(c.cols() == p.n);
    CHECK(((c.cast<double>() - want).cwiseAbs().array() <= bound.array()).all());
}

/// The weight-gradient-like products: narrow outputs (wide tiles), long depths (chunks), several
/// row tiles, a transposed A, no accumulation, a depth of zero, an empty output.
std::vector<Case> reduction_cases() {
    std::vector<Case> cases;
    cases.emplace_back(false, true, 64, 600, 2500, true, 1);    // dW^T of a 64-input layer: tiles 512 wide, 2 chunks
    cases.emplace_back(false, true, 300, 130, 700, false, 11);  // 2 row tiles, one chunk
    cases.emplace_back(true, false, 5, 3, 4100, true, 21);      // tiny output, 4 chunks
    cases.emplace_back(true, true, 129, 257, 2048, false, 31);  // 2 chunks, both transposed
    cases.emplace_back(false, false, 7, 9, 0, false, 41);       // no depth: C = 0
    cases.emplace_back(false, true, 0, 5, 3000, true, 51);      // no output
    return cases;
}

}  // namespace

TEST_CASE("gemm and gemm_many: against a plain sum (tiles, depth split, transposes)", "[gemm]") {
    std::vector<Case> cases;
    cases.emplace_back(false, false, 300, 260, 70, false, 1);  // several tiles both ways
    cases.emplace_back(true, false, 40, 30, 3000, true, 11);   // one tile, long depth: split
    cases.emplace_back(false, true, 513, 129, 33, true, 21);
    cases.emplace_back(true, true, 17, 300, 600, false, 31);
    cases.emplace_back(false, false, 70, 700, 50, true, 41);  // expert tiles: 3 of 234 columns
    std::vector<Matrix<float>> out;
    for (const Case& p : cases) {
        Matrix<float> c = p.c0;
        detail::gemm<float>(p.trans_a, p.trans_b, p.m, p.n, p.k, 1.0f, p.a.data(), p.a.rows(), p.b.data(), p.b.rows(),
                            p.accumulate, c.data(), c.rows());
        check_close(p, c);
        out.push_back(p.c0);
    }
    detail::gemm_many<float>(Index(cases.size()), [&](Index i) { return cases[std::size_t(i)].args(out[std::size_t(i)]); });
    for (std::size_t i = 0; i < cases.size(); ++i) check_close(cases[i], out[i]);
    // The tiles of a SparseMoE's experts: 256 wide, equal widths (300 columns: one tile; 700: three).
    for (std::size_t i = 0; i < cases.size(); ++i) out[i] = cases[i].c0;
    detail::gemm_many<float>(
        Index(cases.size()), [&](Index i) { return cases[std::size_t(i)].args(out[std::size_t(i)]); }, detail::kExpertTiles);
    for (std::size_t i = 0; i < cases.size(); ++i) check_close(cases[i], out[i]);
}

TEST_CASE("gemm_many's tiles: gemm's by default, equal widths for experts", "[gemm]") {
    // The default must cut columns as gemm and the blocked MLP pass do (128 wide from the first):
    // equal widths there changed the layer-by-layer pass's bits on BLIS.
    const detail::GemmTiles plain;
    CHECK(plain.col_tiles(300) == 3);
    CHECK(plain.col_width(300) == 128);
    CHECK(plain.col_width(100) == 128);
    CHECK(detail::kExpertTiles.col_tiles(283) == 1);  // one tile, not 256 + 27
    CHECK(detail::kExpertTiles.col_width(283) == 283);
    CHECK(detail::kExpertTiles.col_tiles(700) == 3);
    CHECK(detail::kExpertTiles.col_width(700) == 234);
    CHECK(detail::kExpertTiles.col_tiles(1) == 1);
}

TEST_CASE("gemm_reductions: against a plain sum, wide tiles and depth chunks", "[gemm]") {
    const std::vector<Case> cases = reduction_cases();
    std::vector<Matrix<float>> out;
    for (const Case& p : cases) out.push_back(p.c0);
    detail::gemm_reductions<float>(Index(cases.size()), [&](Index i) { return cases[std::size_t(i)].args(out[std::size_t(i)]); });
    for (std::size_t i = 0; i < cases.size(); ++i) check_close(cases[i], out[i]);
    CHECK(out[4].isZero());
}

TEST_CASE("gemm_reductions: more products than one call's table holds", "[gemm]") {
    std::vector<Case> cases;
    for (int i = 0; i < 600; ++i) cases.emplace_back(false, true, 3, 2, 5 + i % 3, i % 2 == 0, std::uint64_t(100 + 3 * i));
    std::vector<Matrix<float>> out;
    for (const Case& p : cases) out.push_back(p.c0);
    detail::gemm_reductions<float>(Index(cases.size()), [&](Index i) { return cases[std::size_t(i)].args(out[std::size_t(i)]); });
    for (std::size_t i = 0; i < cases.size(); ++i) check_close(cases[i], out[i]);
}

#ifdef _OPENMP
TEST_CASE("gemm_reductions and gemm: the same bits on 1, 2 and 3 threads, together or apart", "[gemm][threads]") {
    const std::vector<Case> cases = reduction_cases();
    auto together = [&] {
        std::vector<Matrix<float>> out;
        for (const Case& p : cases) out.push_back(p.c0);
        detail::gemm_reductions<float>(Index(cases.size()), [&](Index i) { return cases[std::size_t(i)].args(out[std::size_t(i)]); });
        return out;
    };
    auto apart = [&] {
        std::vector<Matrix<float>> out;
        for (const Case& p : cases) {
            out.push_back(p.c0);
            detail::gemm_reductions<float>(1, [&](Index) { return p.args(out.back()); });
        }
        return out;
    };
    const Case split(true, false, 40, 30, 3000, true, 61);  // gemm's depth split
    auto plain = [&] {
        Matrix<float> c = split.c0;
        detail::gemm<float>(split.trans_a, split.trans_b, split.m, split.n, split.k, 1.0f, split.a.data(), split.a.rows(),
                            split.b.data(), split.b.rows(), split.accumulate, c.data(), c.rows());
        return c;
    };
    std::vector<Matrix<float>> reference;
    Matrix<float> plain_reference;
    {
        moe::testing::ForcedThreads one(1);
        reference = together();
        plain_reference = plain();
    }
    for (int threads : {1, 2, 3}) {
        moe::testing::ForcedThreads forced(threads);
        INFO(threads << " threads");
        const std::vector<Matrix<float>> t = together(), a = apart();
        for (std::size_t i = 0; i < cases.size(); ++i) {
            CHECK(t[i] == reference[i]);
            CHECK(a[i] == reference[i]);
        }
        CHECK(plain() == plain_reference);
    }
}
#endif

}  // namespace test_gemm
