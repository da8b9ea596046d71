// The module contract, checked generically: the example layer and composite of core/module.hpp,
// and the public gradient checker (moe/testing/gradcheck.hpp) over every model kind from the one
// list of small specs (support/specs.hpp), with every task kind, label masks, batchnorm and dropout.
#include "support/catch.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_every_model {

using namespace moe;
using namespace moe::testing;

namespace {
constexpr double kTol = 1e-6;

/// A model's check through its MultiTaskLoss, masked as mask_for does.
template <class M>
double check_kind(const typename M::Spec& spec, bool masked, Index batch = 7) {
    Model<M> model(spec, 3);
    MultiTaskLoss<double> loss(model.tasks());
    Matrix<double> mask;
    if (masked) {
        mask = Matrix<double>::Ones(Index(model.tasks().size()), batch);
        for (Index b = 0; b < batch; b += 3) mask(1, b) = 0;
    }
    const auto r = check_model(model, batch, loss, mask);
    if (r.max_error >= kTol) UNSCOPED_INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}

template <class Spec>
Spec with_batchnorm_and_dropout(Spec s) {
    s.batchnorm = true;
    s.tower_dropout = 0.25;
    return s;
}
}  // namespace

TEST_CASE("The example layer and composite of core/module.hpp keep the contract", "[contract][gradcheck]") {
    example::ExampleScale<double> scale(4);
    CHECK(gradcheck_bare(scale, random_matrix(4, 6, 1)) < kTol);
    example::ExampleResidual<double> residual(4);
    CHECK(gradcheck_bare(residual, random_matrix(4, 6, 2)) < kTol);
    // The composite forwards the parameters of its children under their names.
    ParameterStore<double> store;
    store.bind(residual);
    CHECK(store.contains("scale.weight"));
    CHECK(store.contains("scale.bias"));
    // A wrong shape is a shape_error naming the layer.
    CHECK_THROWS_WITH(scale.forward(random_matrix(3, 2, 1)), Catch::Matchers::Contains("ExampleScale::forward"));
}

TEST_CASE("Every model kind passes the generic gradient check", "[contract][gradcheck]") {
    for (bool masked : {false, true}) {
        INFO("masked " << masked);
        CHECK(check_kind<MMoE<double>>(small_mmoe(), masked) < kTol);
        CHECK(check_kind<MMoE<double>>(with_batchnorm_and_dropout(small_mmoe()), masked) < kTol);
        CHECK(check_kind<OMoE<double>>(small_mmoe(), masked) < kTol);
        CHECK(check_kind<SharedBottom<double>>(with_batchnorm_and_dropout(small_shared_bottom()), masked) < kTol);
        CHECK(check_kind<PLE<double>>(with_batchnorm_and_dropout(small_ple()), masked) < kTol);
        CHECK(check_kind<CGC<double>>(small_ple(three_task_kinds(), 1), masked) < kTol);
        CHECK(check_kind<SparseMMoE<double>>(small_sparse_mmoe(2), masked) < kTol);
        // DSelect-k's loss carries the entropy term too: the central difference's round-off (about
        // 1e-16 * loss / h, h = 1e-6) reaches 1.2e-6 of the floor here, so the bound is 3x wider.
        CHECK(check_kind<MMoE<double>>(small_dselect_mmoe(), masked) < 3 * kTol);
    }
    // The token-level layer, through sum(R .* y) + its aux losses.
    SparseMoESpec s = small_sparse_moe();
    s.balance_coef = 0.1;
    Model<SparseMoE<double>> layer(s, 2);
    const auto r = check_layer(layer, layer.params(), random_matrix(6, 9, 3));
    CHECK(r.max_error < kTol);
}

}  // namespace test_every_model
