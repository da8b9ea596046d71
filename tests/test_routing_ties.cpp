// Ties in top-k routing go to the lower expert index in every build. This file is compiled twice:
// as test_routing_ties (the suite's flags) and test_routing_ties_native (-march=native, wider SIMD),
// because SparseMMoE once chose on softmax outputs, whose rounding differs between SIMD lanes and
// the scalar tail: equal logits then routed differently with -O2 and -march=native.
#include "support/catch.hpp"
#include "support/gradcheck.hpp"

// In the file's own namespace: the file is also part of the unity-built test program.
namespace test_routing_ties {

using namespace moe;

namespace {
/// Gate logits [1, 0.3, 0.3, ...]: expert 0 first, then a tie of all the others.
template <class T>
void tie_the_gate(ParameterStore<T>& store, const std::string& weight, const std::string& bias, Index experts) {
    store.value(weight).setZero();
    auto b = store.value(bias);
    b.setConstant(T(0.3));
    b(0, 0) = T(1);
    (void)experts;
}
}  // namespace

TEMPLATE_TEST_CASE("Top-k ties go to the lower index: SparseMMoE", "[sparse][routing]", float, double) {
    using T = TestType;
    for (Index experts : {3, 5, 7, 9, 13, 17}) {
        INFO(experts << " experts");
        SparseMMoESpec s;
        s.input = 6;
        s.experts = experts;
        s.expert_hidden = {4};
        s.expert_dim = 3;
        s.tower_hidden = {};
        s.tasks = {binary_task("a"), regression_task("b")};
        s.k = 2;
        Model<SparseMMoE<T>> model(s, 1);
        for (int g = 0; g < 2; ++g)
            tie_the_gate(model.params(), "gates." + std::to_string(g) + ".weight", "gates." + std::to_string(g) + ".bias",
                         experts);
        const Matrix<T> x = moe::testing::random_matrix(6, 40, 2).template cast<T>();
        model.forward(x);
        CHECK(model.expert_samples(0) == 40);
        CHECK(model.expert_samples(1) == 40);
        for (Index e = 2; e < experts; ++e) CHECK(model.expert_samples(e) == 0);
        // The inference path routes the same way.
        InferenceWorkspace<T> ws;
        const auto& pred = model.predict(x, ws);
        model.eval();
        const auto& out = model.forward(x);
        CHECK((Matrix<T>(pred[1]) - Matrix<T>(out[1])).cwiseAbs().maxCoeff() <= T(1e-6));
    }
}

TEMPLATE_TEST_CASE("Top-k ties go to the lower index: SparseMoE", "[sparse][routing]", float, double) {
    using T = TestType;
    for (Index experts : {3, 5, 9, 17}) {
        INFO(experts << " experts");
        SparseMoESpec s;
        s.dim = 6;
        s.ffn = 4;
        s.experts = experts;
        s.k = 2;
        s.router_bias = true;
        Model<SparseMoE<T>> layer(s, 1);
        tie_the_gate(layer.params(), "router.weight", "router.bias", experts);
        const Matrix<T> x = moe::testing::random_matrix(6, 30, 3).template cast<T>();
        layer.forward(x);
        for (Index t = 0; t < 30; ++t) {
            CHECK(layer.choice(0, t) == 0);
            CHECK(layer.choice(1, t) == 1);
        }
    }
}

}  // namespace test_routing_ties
