// LayerNorm and RMSNorm: PyTorch parity (tools/make_norm_reference.py: outputs, dx and the
// parameters' gradients, with a constant token whose variance is 0), gradient checks, infer equal
// to forward, batches of one, and bad settings.
#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_layer_norm {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
template <class T>
Matrix<T> vec(const SafetensorsFile& f, const std::string& name) {
    const std::vector<T> v = f.at(name).template values<T>();
    return Eigen::Map<const Matrix<T>>(v.data(), Index(v.size()), 1);
}
}  // namespace

TEMPLATE_TEST_CASE("LayerNorm and RMSNorm match PyTorch: outputs, dx, parameter gradients", "[layers][norm][parity]", float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(moe::testing::fixture_path(std::string("norm_") +
                                                                          (std::is_same_v<T, double> ? "f64" : "f32") + ".safetensors"));
    const Matrix<T> x = f.at("x").template batch<T>(), dy = f.at("dy").template batch<T>();
    {
        LayerNorm<T> ln(5);
        ParameterStore<T> store;
        store.bind(ln);
        store.value("weight") = vec<T>(f, "ln.weight");
        store.value("bias") = vec<T>(f, "ln.bias");
        MOE_CHECK_CLOSE(Matrix<T>(ln.forward(x)), f.at("ln.y").template batch<T>(), T);
        store.zero_grad();
        MOE_CHECK_CLOSE(Matrix<T>(ln.backward(dy)), f.at("ln.dx").template batch<T>(), T);
        MOE_CHECK_CLOSE(Matrix<T>(store.grad("weight")), vec<T>(f, "ln.dweight"), T);
        MOE_CHECK_CLOSE(Matrix<T>(store.grad("bias")), vec<T>(f, "ln.dbias"), T);
    }
    {
        RMSNorm<T> rms(5);
        ParameterStore<T> store;
        store.bind(rms);
        CHECK(store.entries().size() == 1);
        store.value("weight") = vec<T>(f, "rms.weight");
        MOE_CHECK_CLOSE(Matrix<T>(rms.forward(x)), f.at("rms.y").template batch<T>(), T);
        store.zero_grad();
        MOE_CHECK_CLOSE(Matrix<T>(rms.backward(dy)), f.at("rms.dx").template batch<T>(), T);
        MOE_CHECK_CLOSE(Matrix<T>(store.grad("weight")), vec<T>(f, "rms.dweight"), T);
    }
}

TEST_CASE("LayerNorm and RMSNorm: gradients, infer equals forward, one column", "[layers][norm][gradcheck]") {
    const Matrix<double> x = moe::testing::random_matrix(6, 5, 3) * 2.0;
    LayerNorm<double> ln(6);
    CHECK(moe::testing::gradcheck_bare(ln, x) < 1e-6);
    LayerNorm<double> no_bias(6, 1e-5, /*bias=*/false);
    CHECK(moe::testing::gradcheck_bare(no_bias, x) < 1e-6);
    RMSNorm<double> rms(6);
    CHECK(moe::testing::gradcheck_bare(rms, x) < 1e-6);
    CHECK(moe::testing::gradcheck_bare(rms, moe::testing::random_matrix(6, 1, 4)) < 1e-6);  // one token

    // Fresh layers (gradcheck_bare's store is gone), bound to a store of their own.
    LayerNorm<double> ln2(6);
    RMSNorm<double> rms2(6);
    ParameterStore<double> s1, s2;
    s1.bind(ln2);
    s2.bind(rms2);
    Rng rng(1);
    ln2.reset_parameters(rng);
    rms2.reset_parameters(rng);
    Buffer<double> out;
    const Matrix<double> y = ln2.forward(x);
    CHECK(Matrix<double>(ln2.infer(x, out)) == y);
    const Matrix<double> r = rms2.forward(x);
    CHECK(Matrix<double>(rms2.infer(x, out)) == r);
    // Each column normalised on its own: mean 0 and variance 1 (weight 1, bias 0 at init).
    for (Index j = 0; j < y.cols(); ++j) {
        CHECK(std::abs(y.col(j).mean()) < 1e-12);
        CHECK(std::abs(y.col(j).squaredNorm() / 6.0 - 1.0) < 1e-4);
        CHECK(std::abs(r.col(j).squaredNorm() / 6.0 - 1.0) < 1e-4);
    }
}

TEST_CASE("LayerNorm and RMSNorm: bad settings and shapes give clear errors", "[layers][norm][errors]") {
    CHECK_THROWS_WITH(LayerNorm<double>(0), Contains("moe::LayerNorm: features must be positive, got 0"));
    CHECK_THROWS_WITH(LayerNorm<double>(4, 0.0), Contains("eps must be positive and finite, got 0"));
    CHECK_THROWS_WITH(RMSNorm<double>(4, -1.0), Contains("moe::RMSNorm: eps must be positive"));
    LayerNorm<double> ln(4);
    ParameterStore<double> store;
    store.bind(ln);
    const Matrix<double> three = Matrix<double>::Ones(3, 2), four = Matrix<double>::Ones(4, 2), dy = Matrix<double>::Ones(4, 3);
    CHECK_THROWS_AS(ln.forward(three), shape_error);
    ln.forward(four);
    CHECK_THROWS_AS(ln.backward(dy), shape_error);
}

}  // namespace test_layer_norm
