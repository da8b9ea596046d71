// Parity with PyTorch 1.13 on reference cases made by tools/make_core_reference.py:
// Linear, MLP (training and evaluation), losses, Adam/AdamW/SGD, clipping and schedules.
#include "support/catch.hpp"
#include "support/fixtures.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_parity_core {

using namespace moe;
using moe::testing::fixture_path;

namespace {
template <class T>
const SafetensorsFile& reference() {
    static const SafetensorsFile f =
        read_safetensors(fixture_path(std::is_same_v<T, double> ? "core_f64.safetensors" : "core_f32.safetensors"));
    return f;
}
template <class T>
Matrix<T> mat(const std::string& name) {
    return reference<T>().at(name).template matrix<T>();
}
template <class T>
Matrix<T> batch(const std::string& name) {
    return reference<T>().at(name).template batch<T>();
}
}  // namespace

TEMPLATE_TEST_CASE("PyTorch parity: Linear forward and backward", "[parity]", float, double) {
    using T = TestType;
    Linear<T> lin(5, 3);
    ParameterStore<T> store;
    store.bind(lin);
    lin.weight().value = mat<T>("linear.weight");
    lin.bias().value = mat<T>("linear.bias");
    const Matrix<T> x = batch<T>("linear.x");
    MOE_CHECK_CLOSE(Matrix<T>(lin.forward(x)), batch<T>("linear.y"), T);
    const Matrix<T> dy = batch<T>("linear.dy");
    const Matrix<T> dx = lin.backward(dy);
    MOE_CHECK_CLOSE(dx, batch<T>("linear.dx"), T);
    MOE_CHECK_CLOSE(Matrix<T>(lin.weight().grad), mat<T>("linear.grad.weight"), T);
    MOE_CHECK_CLOSE(Matrix<T>(lin.bias().grad), mat<T>("linear.grad.bias"), T);
}

TEMPLATE_TEST_CASE("PyTorch parity: MLP with batchnorm in training and evaluation", "[parity]", float, double) {
    using T = TestType;
    for (const std::string act : {"relu", "gelu", "tanh"}) {
        INFO(act);
        const std::string p = "mlp_" + act;
        MLPSpec spec{{6, 8, 5, 3}};
        spec.activation = activation_from_string(act);
        spec.batchnorm = true;
        Model<MLP<T>> mlp(spec);
        for (const auto& e : mlp.params().entries()) mlp.params().value(e.name) = mat<T>(p + ".param." + e.name);
        const Matrix<T> x = batch<T>(p + ".x");
        MOE_CHECK_CLOSE(Matrix<T>(mlp.forward(x)), batch<T>(p + ".y"), T);
        const Matrix<T> dx = mlp.backward(batch<T>(p + ".dy"));
        MOE_CHECK_CLOSE(dx, batch<T>(p + ".dx"), T);
        for (const auto& e : mlp.params().entries()) {
            INFO(e.name);
            MOE_CHECK_CLOSE(Matrix<T>(mlp.params().grad(e.name)), mat<T>(p + ".grad." + e.name), T);
        }
        mlp.for_each_batchnorm("", [&](const std::string& name, BatchNorm1d<T>& bn) {
            MOE_CHECK_CLOSE(bn.running_mean(), mat<T>(p + ".running." + name + ".running_mean"), T);
            MOE_CHECK_CLOSE(bn.running_var(), mat<T>(p + ".running." + name + ".running_var"), T);
        });
        mlp.eval();
        MOE_CHECK_CLOSE(Matrix<T>(mlp.forward(x)), batch<T>(p + ".y_eval"), T);
    }
}

TEMPLATE_TEST_CASE("PyTorch parity: losses", "[parity]", float, double) {
    using T = TestType;
    BCEWithLogitsLoss<T> bce;
    MSELoss<T> mse;
    HuberLoss<T> huber(0.7);
    auto check = [&](auto& loss, const std::string& name) {
        INFO(name);
        const Matrix<T> z = mat<T>("loss." + name + ".logits"), y = mat<T>("loss." + name + ".target");
        const Matrix<T> w = mat<T>("loss." + name + ".weight");
        const T v = loss.forward(z, y, w);
        CHECK(std::abs(double(v) - double(mat<T>("loss." + name + ".value")(0, 0))) <= moe::testing::parity_tolerance<T>());
        MOE_CHECK_CLOSE(Matrix<T>(loss.backward()), mat<T>("loss." + name + ".grad"), T);
        const T vm = loss.forward(z, y);
        CHECK(std::abs(double(vm) - double(mat<T>("loss." + name + ".value_mean")(0, 0))) <= moe::testing::parity_tolerance<T>());
        MOE_CHECK_CLOSE(Matrix<T>(loss.backward()), mat<T>("loss." + name + ".grad_mean"), T);
    };
    check(bce, "bce");
    check(mse, "mse");
    check(huber, "huber");
    CrossEntropyLoss<T> ce;
    const Matrix<T> zc = batch<T>("loss.ce.logits");
    const Matrix<T> cls = mat<T>("loss.ce.target");
    const T v = ce.forward(zc, cls);
    CHECK(std::abs(double(v) - double(mat<T>("loss.ce.value_mean")(0, 0))) <= moe::testing::parity_tolerance<T>());
    MOE_CHECK_CLOSE(Matrix<T>(ce.backward()), batch<T>("loss.ce.grad_mean"), T);
}

TEMPLATE_TEST_CASE("PyTorch parity: Adam, AdamW and SGD steps", "[parity][optim]", float, double) {
    using T = TestType;
    auto run = [&](auto opt, const std::string& name) {
        INFO(name);
        Vector<T> p = mat<T>("optim.p0");
        for (int i = 1; i <= 3; ++i) {
            const Vector<T> g = mat<T>("optim.g" + std::to_string(i));
            opt.step(p, g);
            MOE_CHECK_CLOSE(p, mat<T>(name + ".p" + std::to_string(i)), T);
        }
    };
    AdamOptions a;
    a.lr = 1e-2;
    run(Adam<T>(a), "adam");
    a.weight_decay = 0.1;
    run(Adam<T>(a), "adam_wd");
    run(AdamW<T>(a), "adamw");
    SGDOptions s;
    s.lr = 0.1;
    s.momentum = 0.9;
    s.dampening = 0.1;
    s.weight_decay = 0.01;
    run(SGD<T>(s), "sgd");
    SGDOptions n;
    n.lr = 0.1;
    n.momentum = 0.9;
    n.nesterov = true;
    run(SGD<T>(n), "sgd_nesterov");
}

TEST_CASE("Adam: the run-time AVX2 and AVX-512 updates agree with the compiled one", "[optim]") {
#ifdef MOE_SIMD_DISPATCH
    using Kernel = void (*)(float*, float*, float*, const float*, Index, const detail::AdamScalars<float>&);
    std::vector<std::pair<const char*, Kernel>> kernels;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) kernels.emplace_back("avx2", detail::adam_update_avx2);
    if (__builtin_cpu_supports("avx512f")) kernels.emplace_back("avx512", detail::adam_update_avx512);
    if (kernels.empty()) {
        WARN("skipped: this CPU has neither AVX2 nor AVX-512");
        return;
    }
    const Index n = 1000 + 13;  // a vector body and a tail
    Rng rng(5);
    Vector<float> p0(n), g(n);
    for (Index i = 0; i < n; ++i) p0[i] = float(rng.normal()), g[i] = float(rng.normal());
    for (const auto& [decoupled, l2] : {std::pair{false, false}, std::pair{true, false}, std::pair{false, true}}) {
        detail::AdamScalars<float> s{0.9f, 0.1f, 0.999f, 0.001f, 0.1f, 0.999f, 0.0316f, 0.01f, 1e-8f, l2, decoupled};
        Vector<float> p = p0, m = Vector<float>::Zero(n), v = Vector<float>::Zero(n);
        for (int step = 0; step < 3; ++step) detail::adam_update_compiled(p.data(), m.data(), v.data(), g.data(), n, s);
        for (const auto& [name, kernel] : kernels) {
            INFO(name << " decoupled " << decoupled << " l2 " << l2);
            Vector<float> pk = p0, mk = Vector<float>::Zero(n), vk = Vector<float>::Zero(n);
            for (int step = 0; step < 3; ++step) kernel(pk.data(), mk.data(), vk.data(), g.data(), n, s);
            CHECK((pk - p).cwiseAbs().maxCoeff() <= 1e-6f);
            CHECK((mk - m).cwiseAbs().maxCoeff() <= 1e-6f);
            CHECK((vk - v).cwiseAbs().maxCoeff() <= 1e-6f);
        }
    }
#else
    WARN("skipped: no run-time SIMD dispatch on this compiler or CPU family");
#endif
}

TEMPLATE_TEST_CASE("PyTorch parity: clip_grad_norm", "[parity][optim]", float, double) {
    using T = TestType;
    Vector<T> g = mat<T>("clip.g");
    const T norm = clip_grad_norm(g, 1.5);
    CHECK(std::abs(double(norm) - double(mat<T>("clip.norm")(0, 0))) <= moe::testing::parity_tolerance<T>() * 10);
    MOE_CHECK_CLOSE(g, mat<T>("clip.g_clipped"), T);
}

TEST_CASE("PyTorch parity: CosineAnnealingLR and StepLR", "[parity][optim]") {
    const Matrix<double> cos = mat<double>("schedule.cosine"), step = mat<double>("schedule.steplr");
    CosineAnnealingLR c(0.1, 10, 1e-4);
    StepLR s(0.1, 3, 0.5);
    for (Index t = 0; t < cos.rows(); ++t) {
        CHECK(c(double(t)) == Approx(cos(t, 0)).epsilon(1e-12).margin(1e-15));
        CHECK(s(double(t)) == Approx(step(t, 0)).epsilon(1e-12));
    }
}

TEST_CASE("Optimizers: bad settings are config errors", "[optim][errors]") {
    AdamOptions a;
    a.lr = -1;
    CHECK_THROWS_WITH(Adam<double>(a), "moe::Adam: lr must be >= 0, got -1");
    a = {};
    a.beta1 = 1.0;
    CHECK_THROWS_AS(Adam<double>(a), config_error);
    a = {};
    a.eps = 0;
    CHECK_THROWS_AS(Adam<double>(a), config_error);
    SGDOptions s;
    s.nesterov = true;
    CHECK_THROWS_AS(SGD<double>(s), config_error);
    CHECK_THROWS_AS(CosineAnnealingLR(0.1, 0), config_error);
    Vector<double> g = Vector<double>::Ones(3);
    CHECK_THROWS_AS(clip_grad_norm(g, 0.0), config_error);
    Adam<double> adam;
    Vector<double> p = Vector<double>::Zero(3), g2 = Vector<double>::Zero(4);
    CHECK_THROWS_AS(adam.step(p, g2), shape_error);
}

}  // namespace test_parity_core
