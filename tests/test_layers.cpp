// Gradient checks and behaviour of every layer: Linear, activations, Softmax, BatchNorm1d, Dropout, MLP.
#include "support/catch.hpp"
#include "support/forced_threads.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_layers {

using namespace moe;
using moe::testing::gradcheck_bare;
using moe::testing::check_layer;
using moe::testing::random_matrix;

namespace {
constexpr double kTol = 1e-6;

}  // namespace

TEST_CASE("Linear: gradients of input, weight and bias", "[layers][gradcheck]") {
    Linear<double> lin(5, 3);
    CHECK(gradcheck_bare(lin, random_matrix(5, 4, 2)) < kTol);
}

TEST_CASE("Linear: forward is W x + b", "[layers]") {
    Linear<double> lin(2, 2);
    ParameterStore<double> store;
    store.bind(lin);
    lin.weight().value << 1, 2, 3, 4;
    lin.bias().value << 0.5, -1;
    Matrix<double> x(2, 1);
    x << 1, 1;
    Matrix<double> y = lin.forward(x);
    CHECK(y(0, 0) == 3.5);
    CHECK(y(1, 0) == 6.0);
    CHECK(store.entries()[0].name == "weight");
    CHECK(store.entries()[1].name == "bias");
}

TEST_CASE("Linear: default init is U(-1/sqrt(in), 1/sqrt(in))", "[layers]") {
    Linear<double> lin(100, 50);
    ParameterStore<double> store;
    store.bind(lin);
    Rng rng(3);
    lin.reset_parameters(rng);
    const double bound = 0.1;
    CHECK(lin.weight().value.maxCoeff() < bound);
    CHECK(lin.weight().value.minCoeff() >= -bound);
    CHECK(lin.weight().value.maxCoeff() > 0.9 * bound);  // the range is used, not a narrower one
    CHECK(std::abs(lin.weight().value.mean()) < 0.01);
    CHECK(lin.bias().value.cwiseAbs().maxCoeff() < bound);
}

TEST_CASE("Linear: wrong input shape names the layer and both shapes", "[layers][errors]") {
    Linear<float> lin(64, 8, "experts.3.0");
    ParameterStore<float> store;
    store.bind(lin);
    Matrix<float> x = Matrix<float>::Zero(63, 128);
    CHECK_THROWS_AS(lin.forward(x), shape_error);
    CHECK_THROWS_WITH(lin.forward(x), "experts.3.0::forward: input is 63 x 128 (features x batch), expected 64 rows");
    Matrix<float> ok = Matrix<float>::Zero(64, 4);
    lin.forward(ok);
    Matrix<float> bad_dy = Matrix<float>::Zero(8, 5);
    CHECK_THROWS_WITH(lin.backward(bad_dy), "experts.3.0::backward: output gradient is 8 x 5, expected 8 x 4");
}

TEST_CASE("Linear, MLP, BatchNorm: zero sizes are config errors", "[layers][errors]") {
    CHECK_THROWS_AS(Linear<double>(0, 3), config_error);
    CHECK_THROWS_WITH(Linear<double>(4, 0), Catch::Matchers::Contains("got 4 and 0"));
    CHECK_THROWS_AS(BatchNorm1d<double>(0), config_error);
    CHECK_THROWS_AS(MLP<double>(MLPSpec{{4}}), config_error);
    CHECK_THROWS_WITH(MLP<double>(MLPSpec{{4, 0, 1}}), Catch::Matchers::Contains("sizes[1] must be positive, got 0"));
    MLPSpec bad_dropout{{4, 3, 1}};
    bad_dropout.dropout = 1.0;
    CHECK_THROWS_WITH(MLP<double>(bad_dropout), Catch::Matchers::Contains("dropout p must be in [0, 1), got 1"));
    CHECK_THROWS_AS(Dropout<double>(-0.1), config_error);
    CHECK_THROWS_WITH(Dropout<double>(1.5), Catch::Matchers::Contains("got 1.5"));
}

TEST_CASE("Activations: gradients", "[layers][gradcheck]") {
    // Inputs away from 0 so that ReLU's kink is never inside the finite-difference step.
    Matrix<double> x = random_matrix(6, 5, 3);
    x = (x.array() + x.array().sign() * 0.05).matrix();
    for (auto kind : {ActivationKind::identity, ActivationKind::relu, ActivationKind::gelu, ActivationKind::sigmoid,
                      ActivationKind::tanh}) {
        INFO(to_string(kind));
        Activation<double> act(kind);
        CHECK(gradcheck_bare(act, x) < kTol);
    }
}

TEST_CASE("Activations: values", "[layers]") {
    Matrix<double> x(1, 3);
    x << -2.0, 0.0, 1.5;
    ReLU<double> relu;
    CHECK(Matrix<double>(relu.forward(x)) == (Matrix<double>(1, 3) << 0.0, 0.0, 1.5).finished());
    GELU<double> gelu;
    const Matrix<double> g = gelu.forward(x);
    CHECK(g(0, 0) == Approx(-0.04550026389635842).epsilon(1e-14));  // exact erf form, as torch
    CHECK(g(0, 2) == Approx(1.399789198096713).epsilon(1e-14));
    Sigmoid<double> sig;
    Matrix<double> big(1, 2);
    big << -1e4, 1e4;
    const Matrix<double> s = sig.forward(big);
    CHECK(s(0, 0) == 0.0);
    CHECK(s(0, 1) == 1.0);
    CHECK(activation_from_string("gelu") == ActivationKind::gelu);
    CHECK_THROWS_WITH(activation_from_string("swish"), Catch::Matchers::Contains("unknown activation 'swish'"));
}

TEST_CASE("Activation: output over input, input gradient over output gradient (blocked MLPs); a copy owns its output", "[layers]") {
    Matrix<double> x = random_matrix(3, 5, 7);
    const Matrix<double> x0 = x, dy = random_matrix(3, 5, 8);
    MatrixView<double> xv(x.data(), 3, 5);
    ReLU<double> relu;
    CHECK(relu.begin_forward_in_place(xv).data() == x.data());
    relu.forward_columns(0, 2);
    relu.forward_columns(2, 5);
    CHECK(x == x0.cwiseMax(0.0));
    CHECK(relu.output().data() == x.data());
    ReLU<double> copy = relu;
    CHECK(copy.output().data() != x.data());
    CHECK(Matrix<double>(copy.output()) == x);
    ReLU<double> moved = std::move(relu);
    CHECK(moved.output().data() == x.data());
    const MatrixView<double>& dx = moved.begin_backward(dy);
    moved.backward_columns(dy, 0, 5);
    CHECK(Matrix<double>(dx) == (x0.array() > 0).select(dy, 0.0));
    CHECK_THROWS_AS(moved.begin_backward(Matrix<double>(3, 4)), shape_error);
    Matrix<double> d = dy;  // the input gradient written over the output gradient
    MatrixView<double> dv(d.data(), 3, 5);
    CHECK(moved.begin_backward_in_place(dv).data() == d.data());
    moved.backward_columns(dv, 0, 5);
    CHECK(d == Matrix<double>(dx));
    const Matrix<double> x2 = random_matrix(3, 5, 9);
    CHECK(moved.forward(x2).data() != x.data());  // a plain forward owns its output again
    CHECK(moved.output().data() != x.data());
    GELU<double> gelu;
    CHECK_THROWS_WITH(gelu.begin_forward_in_place(xv), Catch::Matchers::Contains("needs the input"));
}

TEST_CASE("Softmax: stable and gradients", "[layers][gradcheck]") {
    Softmax<double> sm;
    CHECK(gradcheck_bare(sm, random_matrix(4, 3, 5)) < kTol);
    Matrix<double> x(3, 1);
    x << 1000.0, 1000.0, -1000.0;
    const Matrix<double> y = sm.forward(x);
    CHECK(y(0, 0) == Approx(0.5));
    CHECK(y(2, 0) == 0.0);
    CHECK(y.allFinite());
}

TEST_CASE("BatchNorm1d: gradients in training and evaluation", "[layers][gradcheck]") {
    BatchNorm1d<double> bn(4);
    ParameterStore<double> store;
    store.bind(bn);
    Rng rng(1);
    bn.reset_parameters(rng);
    // Non-trivial affine parameters so that their gradients matter.
    store.values() = random_matrix(store.size(), 1, 9);
    auto r = check_layer(bn, store, random_matrix(4, 6, 4));
    INFO(r.report);
    CHECK(r.max_error < kTol);
    bn.set_training(false);
    bn.running_mean() = random_matrix(4, 1, 10);
    bn.running_var() = (random_matrix(4, 1, 11).array() + 1.5).matrix();
    auto re = check_layer(bn, store, random_matrix(4, 6, 4));
    INFO(re.report);
    CHECK(re.max_error < kTol);
}

TEST_CASE("BatchNorm1d: running statistics follow PyTorch", "[layers]") {
    BatchNorm1d<double> bn(1, 1e-5, 0.1);
    ParameterStore<double> store;
    store.bind(bn);
    Rng rng(1);
    bn.reset_parameters(rng);
    Matrix<double> x(1, 4);
    x << 1, 2, 3, 6;  // mean 3, biased var 3.5, unbiased var 14/3
    const Matrix<double> y = bn.forward(x);
    CHECK(bn.running_mean()(0) == Approx(0.3));
    CHECK(bn.running_var()(0) == Approx(0.9 + 0.1 * 14.0 / 3.0));
    CHECK(bn.num_batches_tracked() == 1);
    CHECK(y(0, 0) == Approx(-2.0 / std::sqrt(3.5 + 1e-5)));
    bn.set_training(false);
    const Matrix<double> ye = bn.forward(x);
    CHECK(ye(0, 0) == Approx((1.0 - 0.3) / std::sqrt(bn.running_var()(0) + 1e-5)));
    Buffer<double> out;
    const Matrix<double> yi = bn.infer(x, out);
    CHECK((yi - ye).cwiseAbs().maxCoeff() < 1e-14);
    CHECK(bn.num_batches_tracked() == 1);  // evaluation does not count
    Matrix<double> one(1, 1);
    one << 1.0;
    bn.set_training(true);
    CHECK_THROWS_WITH(bn.forward(one), Catch::Matchers::Contains("more than 1 sample"));
}

TEST_CASE("Dropout: inverted, seeded, off in evaluation, gradient with a fixed mask", "[layers][gradcheck]") {
    Dropout<double> d(0.25, 42);
    Matrix<double> x = Matrix<double>::Ones(50, 40);
    const Matrix<double> y = d.forward(x);
    const double kept = (y.array() != 0.0).cast<double>().mean();
    CHECK(kept == Approx(0.75).margin(0.03));
    CHECK(y.maxCoeff() == Approx(1.0 / 0.75));
    Dropout<double> d2(0.25, 42);
    CHECK(Matrix<double>(d2.forward(x)) == y);  // same seed, same mask
    d.set_training(false);
    CHECK(Matrix<double>(d.forward(x)) == x);
    d.set_training(true);
    d.freeze_mask(true);
    CHECK(gradcheck_bare(d, random_matrix(50, 40, 1)) < kTol);
}

TEST_CASE("MLP: 3 layers with batchnorm and dropout, gradients in training", "[layers][gradcheck]") {
    MLPSpec spec{{5, 8, 6, 2}};
    spec.batchnorm = true;
    spec.dropout = 0.2;
    Model<MLP<double>> mlp(spec, 3);
    mlp.for_each_dropout([](Dropout<double>& d) { d.freeze_mask(true); });
    auto r = check_layer(mlp, mlp.params(), random_matrix(5, 7, 2));
    INFO(r.report << r.worst);
    CHECK(r.max_error < kTol);
}

TEST_CASE("MLP: batches of several column blocks, gradients (relu, gelu, expert banks, row blocks)", "[layers][gradcheck]") {
    // 300 samples: blocks of 128, 128 and 44 (MLP runs batches above 128 block by block).
    for (ActivationKind act : {ActivationKind::relu, ActivationKind::gelu}) {
        for (GroupedInput input : {GroupedInput::shared, GroupedInput::row_blocks}) {
            MLPSpec spec{{5, 8, 6, 2}};
            spec.activation = act;
            spec.output_activation = true;
            const Index groups = 3;
            MLP<double> mlp(spec, "moe::MLP", groups, input);
            ParameterStore<double> store;
            store.bind(mlp);
            Rng rng(4);
            mlp.reset_parameters(rng);
            const Index in = input == GroupedInput::shared ? 5 : groups * 5;
            auto r = check_layer(mlp, store, random_matrix(in, 300, 2));
            INFO(to_string(act) << (input == GroupedInput::shared ? " shared" : " row blocks") << r.report << r.worst);
            CHECK(r.max_error < kTol);
        }
    }
}

TEST_CASE("MLP: the column blocks give the bits of the layer-by-layer pass", "[layers]") {
    // A Dropout layer keeps an MLP on the layer-by-layer pass; in evaluation mode it is the identity,
    // so the same parameters must give the same bits, forward and backward, blocked or not.
    for (Index batch : {Index(100), Index(128), Index(129), Index(300), Index(1000)}) {
        INFO("batch " << batch);
        MLPSpec spec{{16, 64, 32}};
        spec.output_activation = true;
        MLPSpec with_dropout = spec;
        with_dropout.dropout = 0.5;
        MLP<float> blocked(spec, "moe::MLP", 4, GroupedInput::shared), plain(with_dropout, "moe::MLP", 4, GroupedInput::shared);
        ParameterStore<float> blocked_store, plain_store;
        blocked_store.bind(blocked);
        plain_store.bind(plain);
        Rng rng(1);
        blocked.reset_parameters(rng);
        plain_store.values() = blocked_store.values();
        plain.set_training(false);
        const Matrix<float> x = random_matrix(16, batch, 3).cast<float>(), dy = random_matrix(4 * 32, batch, 4).cast<float>();
        const Matrix<float> y_blocked = blocked.forward(x), y_plain = plain.forward(x);
        CHECK(y_blocked == y_plain);
        const Matrix<float> dx_blocked = blocked.backward(dy, true), dx_plain = plain.backward(dy, true);
        CHECK(dx_blocked == dx_plain);
        CHECK(blocked_store.grads() == plain_store.grads());
    }
}

#ifdef _OPENMP
TEST_CASE("MLP: fewer column blocks than threads run in order, their products threaded: same bits", "[layers][threads]") {
    // 300 samples are 3 blocks; the second layer has 4 tiles per block (4 groups). On 2 threads the
    // blocks run on the threads; on 4 they run one after another, each block's products on the
    // threads. Both must give the bits of one thread.
    MLPSpec spec{{16, 64, 32}};
    spec.output_activation = true;
    const Matrix<float> x = random_matrix(16, 300, 3).cast<float>(), dy = random_matrix(4 * 32, 300, 4).cast<float>();
    struct Pass {
        Matrix<float> y, dx, grads;
    };
    auto run = [&](int threads) {
        MLP<float> mlp(spec, "moe::MLP", 4, GroupedInput::shared);
        ParameterStore<float> store;
        store.bind(mlp);
        Rng rng(1);
        mlp.reset_parameters(rng);
        const moe::testing::ForcedThreads forced(threads);
        Pass p;
        p.y = mlp.forward(x);
        p.dx = mlp.backward(dy, true);
        p.grads = store.grads();
        return p;
    };
    const Pass one = run(1);
    for (int threads : {2, 4}) {
        INFO(threads << " threads");
        const Pass many = run(threads);
        CHECK(many.y == one.y);
        CHECK(many.dx == one.dx);
        CHECK(many.grads == one.grads);
    }
}
#endif

TEST_CASE("MLP: state_dict names follow nn.Sequential", "[layers]") {
    MLPSpec expert{{16, 32, 8}};  // Linear-ReLU-BatchNorm-Linear-ReLU
    expert.batchnorm = true;
    expert.output_activation = true;
    Model<MLP<float>> e(expert);
    std::vector<std::string> names;
    for (auto& en : e.params().entries()) names.push_back(en.name);
    CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"});
    MLPSpec tower{{8, 4, 1}};  // Linear-ReLU-BatchNorm-Dropout-Linear
    tower.batchnorm = true;
    tower.dropout = 0.1;
    Model<MLP<float>> t(tower);
    names.clear();
    for (auto& en : t.params().entries()) names.push_back(en.name);
    CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"});
    CHECK(t.params().size() == 8 * 4 + 4 + 4 + 4 + 4 + 1);
}

TEST_CASE("MLP: infer equals forward in evaluation mode", "[layers]") {
    MLPSpec spec{{5, 8, 3}};
    spec.batchnorm = true;
    spec.dropout = 0.3;
    Model<MLP<double>> mlp(spec, 5);
    Matrix<double> x = random_matrix(5, 9, 1);
    mlp.forward(x);  // update running statistics
    mlp.eval();
    const Matrix<double> y = mlp.forward(x);
    Buffer<double> a, b;
    const Matrix<double> yi = mlp.infer(x, a, b);
    CHECK((y - yi).cwiseAbs().maxCoeff() < 1e-14);
}

TEST_CASE("Model: copies are deep and re-bound", "[layers]") {
    Model<MLP<double>> a(MLPSpec{{3, 4, 2}}, 1);
    Model<MLP<double>> b = a;
    CHECK(b.params().values() == a.params().values());
    b.params().values().setZero();
    CHECK(a.params().values().norm() > 0);
    Matrix<double> x = random_matrix(3, 2, 1);
    CHECK(Matrix<double>(b.forward(x)).cwiseAbs().maxCoeff() == 0.0);  // b's layers see b's store
    CHECK(Matrix<double>(a.forward(x)).cwiseAbs().maxCoeff() > 0.0);
}

TEST_CASE("ConstView: refuses row-major or strided rows", "[core][errors]") {
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm(3, 2);
    rm.setZero();
    CHECK_THROWS_AS(ConstView<double>(rm), shape_error);
    Matrix<double> m = Matrix<double>::Zero(4, 6);
    ConstView<double> cols = m.middleCols(1, 3);
    CHECK(cols.rows() == 4);
    CHECK(cols.cols() == 3);
    ConstView<double> rows = m.topRows(2);  // strided columns are fine
    CHECK(rows.outerStride() == 4);
}

}  // namespace test_layers
