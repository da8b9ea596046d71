// Target attention (DIN): forward as its definition (scores from the MLP, weighted sum, softmax per
// sample as an option, empty histories), gradient checks of the history, the target and the MLP's
// parameters in both modes, PyTorch parity (tools/make_attention_reference.py), and bad offsets.
#include <cmath>
#include <vector>

#include "moe/layers/target_attention.hpp"
#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/gradcheck.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_target_attention {

using namespace moe;
using Catch::Matchers::Contains;
using moe::testing::random_matrix;

namespace {
/// 4 samples over a history of 7 items: lengths 2, 0 (empty), 4 and 1.
const std::vector<std::int64_t> kOffsets{0, 2, 2, 6, 7};

double gradcheck_attention(bool softmax) {
    TargetAttention<double> attn(3, {5, 4}, softmax, ActivationKind::tanh);  // tanh: no kinks for the checker
    ParameterStore<double> store;
    store.bind(attn);
    Rng rng(1);
    attn.reset_parameters(rng);
    Matrix<double> history = random_matrix(3, 7, 2), target = random_matrix(3, 4, 3);
    const Matrix<double> r = random_matrix(3, 4, 5);
    store.zero_grad();
    attn.forward(history, kOffsets, target);
    attn.backward(r);
    std::vector<moe::testing::Probe> probes;
    const Matrix<double> dh = attn.dhistory(), dt = attn.dtarget();
    probes.push_back({"history", history.data(), std::vector<double>(dh.data(), dh.data() + dh.size())});
    probes.push_back({"target", target.data(), std::vector<double>(dt.data(), dt.data() + dt.size())});
    moe::testing::add_parameter_probes(attn, probes);
    auto loss = [&] { return attn.forward(history, kOffsets, target).cwiseProduct(r).sum(); };
    const auto result = moe::testing::check_gradients(loss, probes);
    INFO(result.worst);
    return result.max_error;
}
}  // namespace

TEST_CASE("TargetAttention: the items weighted by their scores; softmax per sample; an empty history gives zeros", "[attention]") {
    for (const bool softmax : {false, true}) {
        TargetAttention<double> attn(3, {6}, softmax);
        ParameterStore<double> store;
        store.bind(attn);
        Rng rng(2);
        attn.reset_parameters(rng);
        const Matrix<double> history = random_matrix(3, 7, 4), target = random_matrix(3, 4, 6);
        const Matrix<double> y = attn.forward(history, kOffsets, target);
        const Matrix<double> w = attn.weights();
        REQUIRE(y.rows() == 3);
        REQUIRE(y.cols() == 4);
        CHECK(y.col(1).isZero());  // the empty history
        for (Index s = 0; s < 4; ++s) {
            Vector<double> expected = Vector<double>::Zero(3);
            double sum = 0;
            for (auto i = kOffsets[std::size_t(s)]; i < kOffsets[std::size_t(s) + 1]; ++i) {
                expected += w(0, Index(i)) * history.col(Index(i));
                sum += w(0, Index(i));
            }
            CHECK((y.col(s) - expected).cwiseAbs().maxCoeff() < 1e-14);
            if (softmax && kOffsets[std::size_t(s) + 1] > kOffsets[std::size_t(s)]) CHECK(sum == Approx(1.0));
        }
        // The score of an item depends on the item and its own target only: moving item 0 to a
        // history of its own with the same target gives it the same raw score.
        if (!softmax) {
            const Matrix<double> one = history.col(0);
            const Matrix<double> t0 = target.col(0);
            attn.forward(one, {0, 1}, t0);
            CHECK(attn.weights()(0, 0) == Approx(w(0, 0)).epsilon(1e-12));
        }
    }
}

TEST_CASE("TargetAttention: gradient checks of history, target and the scoring MLP", "[attention][gradcheck]") {
    CHECK(gradcheck_attention(false) < 1e-6);
    CHECK(gradcheck_attention(true) < 1e-6);
}

TEST_CASE("TargetAttention: bad shapes and offsets name the layer and the value", "[attention][errors]") {
    TargetAttention<float> attn(4, {8}, false, ActivationKind::relu, "din");
    ParameterStore<float> store;
    store.bind(attn);
    const Matrix<float> h = Matrix<float>::Zero(4, 3), t = Matrix<float>::Zero(4, 2);
    CHECK_THROWS_WITH(attn.forward(h, {0, 1}, t), Contains("din: 2 offsets for 2 targets"));
    CHECK_THROWS_WITH(attn.forward(h, {1, 2, 3}, t), Contains("din: offsets must start with 0"));
    CHECK_THROWS_WITH(attn.forward(h, {0, 2, 1}, t), Contains("offsets must not decrease"));
    CHECK_THROWS_WITH(attn.forward(h, {0, 1, 2}, t), Contains("the last offset is 2 but the history has 3 items"));
    const Matrix<float> wide = Matrix<float>::Zero(5, 3), dy = Matrix<float>::Zero(4, 2);
    CHECK_THROWS_AS(attn.forward(wide, {0, 1, 3}, t), shape_error);
    CHECK_THROWS_WITH(attn.backward(dy), Contains("no forward before it"));
    CHECK_THROWS_WITH(TargetAttention<float>(0, {8}), Contains("dim must be positive"));
}

TEMPLATE_TEST_CASE("PyTorch parity: TargetAttention, plain and softmax, forward and backward", "[attention][parity]", float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(
        moe::testing::fixture_path(std::is_same_v<T, double> ? "attention_f64.safetensors" : "attention_f32.safetensors"));
    const Matrix<T> history = f.at("history").batch<T>(), target = f.at("target").batch<T>(), dy = f.at("dy").batch<T>();
    const std::vector<std::int64_t> offsets = f.at("offsets").values<std::int64_t>();
    for (const bool softmax : {false, true}) {
        const std::string c = softmax ? "softmax" : "plain";
        INFO(c);
        TargetAttention<T> attn(3, {5}, softmax, ActivationKind::relu);
        ParameterStore<T> store;
        store.bind(attn);
        for (const auto& e : store.entries()) {  // the store is row-major, as PyTorch's tensors
            const std::vector<T> v = f.at("param." + e.name).template values<T>();
            REQUIRE(Index(v.size()) == e.rows * e.cols);
            std::copy(v.begin(), v.end(), store.values().data() + e.offset);
        }
        MOE_CHECK_CLOSE(Matrix<T>(attn.forward(history, offsets, target)), f.at(c + ".y").batch<T>(), T);
        store.zero_grad();
        attn.backward(dy);
        MOE_CHECK_CLOSE(Matrix<T>(attn.dhistory()), f.at(c + ".dhistory").batch<T>(), T);
        MOE_CHECK_CLOSE(Matrix<T>(attn.dtarget()), f.at(c + ".dtarget").batch<T>(), T);
        for (const auto& e : store.entries()) {
            INFO(e.name);
            const std::vector<T> g = f.at(c + ".grad." + e.name).template values<T>();
            const Eigen::Map<const Vector<T>> expected(g.data(), Index(g.size()));
            MOE_CHECK_CLOSE(Matrix<T>(store.grads().segment(e.offset, e.rows * e.cols)), Matrix<T>(expected), T);
        }
    }
}

}  // namespace test_target_attention
