// Tower trees (MultiTaskSpec::surfaces > 1): gradients of every model kind with samples of several
// surfaces (and one surface absent), predict against forward and against one surface at a time,
// names, model files, fit and evaluate, and bad surface ids.
#include <vector>

#include "support/catch.hpp"
#include "support/model_checks.hpp"
#include "support/specs.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_surfaces {

using namespace moe;
using namespace moe::testing;
using Catch::Matchers::Contains;

namespace {
constexpr double kTol = 1e-6;

/// Surfaces 0, 1, 2 of a 4-surface model, each at least twice in a batch of 10 (BatchNorm); surface 3 absent.
const std::vector<Index> kIds = {0, 1, 0, 2, 1, 0, 2, 1, 2, 0};

template <class Spec>
Spec with_surfaces(Spec s, Index surfaces, bool batchnorm) {
    s.surfaces = surfaces;
    s.batchnorm = batchnorm;
    return s;
}

/// The gradient check of a tower tree; the absent surface's towers must get exactly zero gradients.
template <class M>
void check_tree(Model<M>& model, MultiTaskLoss<double>& loss) {
    const auto r = check_model(model, Index(kIds.size()), loss,
                               mask_for(Index(model.tasks().size()), Index(kIds.size())), SurfaceIds(kIds));
    INFO(r.report << "worst: " << r.worst);
    CHECK(r.max_error < kTol);
    // check_model leaves the gradients of its backward in place.
    for (const auto& e : model.params().entries())
        if (e.name.find("towers.0.3.") == 0 || e.name.find("towers.1.3.") == 0) {
            INFO(e.name);
            CHECK(model.params().grad(e.name).norm() == 0.0);
        }
}
}  // namespace

TEST_CASE("Tower trees: gradients of MMoE, OMoE, SharedBottom, CGC, PLE and SparseMMoE", "[surfaces][gradcheck]") {
    const auto tasks = three_task_kinds();
    MultiTaskLoss<double> loss(tasks);
    for (bool bn : {false, true}) {
        INFO("batchnorm " << bn);
        Model<MMoE<double>> mmoe(with_surfaces(small_mmoe(tasks), 4, bn), 1);
        check_tree(mmoe, loss);
        Model<OMoE<double>> omoe(with_surfaces(small_mmoe(tasks), 4, bn), 2);
        check_tree(omoe, loss);
        Model<SharedBottom<double>> bottom(with_surfaces(small_shared_bottom(tasks), 4, bn), 3);
        check_tree(bottom, loss);
        Model<CGC<double>> cgc(with_surfaces(small_ple(tasks, 1), 4, bn), 4);
        check_tree(cgc, loss);
        Model<PLE<double>> ple(with_surfaces(small_ple(tasks, 2), 4, bn), 5);
        check_tree(ple, loss);
    }
    Model<SparseMMoE<double>> sparse(with_surfaces(small_sparse_mmoe(3, tasks), 4, false), 6);  // k = E: no kinks
    check_tree(sparse, loss);
}

TEST_CASE("Tower trees: names per task and surface; one surface keeps the old names", "[surfaces]") {
    const auto tasks = three_task_kinds();
    Model<MMoE<float>> tree(with_surfaces(small_mmoe(tasks), 3, false), 1);
    CHECK(tree.surfaces() == 3);
    for (const char* name : {"towers.0.0.0.weight", "towers.0.2.0.weight", "towers.2.1.2.bias"}) {
        INFO(name);
        CHECK(tree.params().contains(name));
    }
    CHECK_FALSE(tree.params().contains("towers.0.0.weight"));
    Model<MMoE<float>> plain(small_mmoe(tasks), 1);
    CHECK(plain.params().contains("towers.0.0.weight"));
    // The trunk is the same; the towers are there three times.
    auto count = [](const ParameterStore<float>& store, bool towers) {
        Index n = 0;
        for (const auto& e : store.entries())
            if ((e.name.rfind("towers.", 0) == 0) == towers) n += e.rows * e.cols;
        return n;
    };
    CHECK(count(tree.params(), false) == count(plain.params(), false));
    CHECK(count(tree.params(), true) == 3 * count(plain.params(), true));
}

TEST_CASE("Tower trees: predict equals forward in evaluation mode and one surface at a time", "[surfaces]") {
    const auto tasks = three_task_kinds();
    Model<MMoE<double>> model(with_surfaces(small_mmoe(tasks), 3, true), 7);
    // Train a few steps so that the BatchNorm statistics are not the identity.
    MultiTaskLoss<double> loss(tasks);
    const Matrix<double> x0 = random_matrix(5, 10, 1);
    const Matrix<double> y0 = labels_for(tasks, 10, 2);
    const std::vector<Index> ids0 = {0, 1, 2, 0, 1, 2, 0, 1, 2, 2};
    Adam<double> adam(AdamOptions{});
    for (int i = 0; i < 3; ++i) {
        model.train();
        model.zero_grad();
        loss.forward(model.forward(x0, ids0), y0);
        model.backward(loss.backward());
        adam.step(model.params());
    }
    model.eval();
    // 700 samples: several blocks of the inference path, on several threads where there are.
    const Index n = 700;
    const Matrix<double> x = random_matrix(5, n, 3);
    std::vector<Index> ids(static_cast<std::size_t>(n));
    for (Index j = 0; j < n; ++j) ids[std::size_t(j)] = (j * 7 + j / 5) % 3;
    InferenceWorkspace<double> ws;
    std::vector<Matrix<double>> mixed;
    for (const auto& p : model.predict(x, ws, ids)) mixed.emplace_back(p);
    const auto& fwd = model.forward(x, ids);
    for (std::size_t t = 0; t < tasks.size(); ++t) {
        Buffer<double> head;
        Tower<double>::apply_head(tasks[t], fwd[t], head);
        CHECK((Matrix<double>(head.view()) - mixed[t]).cwiseAbs().maxCoeff() < 1e-12);
    }
    for (Index s = 0; s < 3; ++s) {
        InferenceWorkspace<double> ws1;
        const auto& one = model.predict(x, ws1, s);
        for (std::size_t t = 0; t < tasks.size(); ++t)
            for (Index j = 0; j < n; ++j)
                if (ids[std::size_t(j)] == s) {
                    INFO("task " << t << " sample " << j);
                    CHECK((one[t].col(j) - mixed[t].col(j)).cwiseAbs().maxCoeff() < 1e-12);
                }
    }
    // rank_candidates of one request on one surface is that surface's predictions.
    const Ranking<double> r = rank_candidates(model, ConstView<double>(x), {{"income", 1.0}}, Index(2));
    InferenceWorkspace<double> ws2;
    const auto& two = model.predict(x, ws2, Index(2));
    CHECK((r.predictions[0] - Matrix<double>(two[0])).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("Tower trees: fit and evaluate with a surface column; a model file keeps the surfaces", "[surfaces]") {
    const std::vector<TaskSpec> tasks = {binary_task("click"), regression_task("time")};
    Model<MMoE<float>> model(with_surfaces(small_mmoe(tasks), 3, true), 1);
    MultiTaskData<float> data;
    const Index n = 90;
    data.x = random_matrix(5, n, 4).cast<float>();
    data.labels = labels_for(tasks, n, 5).cast<float>();
    for (Index j = 0; j < n; ++j) data.surfaces.push_back(j % 3);
    MultiTaskLoss<float> loss(tasks);
    FitOptions o;
    o.epochs = 2;
    o.batch_size = 30;
    o.out = nullptr;
    const FitHistory h = fit(model, loss, data, &data, o);
    REQUIRE(h.epochs.size() == 2);
    CHECK(h.epochs.back().validation.size() == 2);

    TempDir dir("surfaces");
    const std::string path = dir.file("tree.safetensors");
    save(model, path);
    const Model<MMoE<float>> loaded = load<MMoE<float>>(path);
    CHECK(loaded.surfaces() == 3);
    const auto a = predict_all(model, data.x, 4096, SurfaceIds(data.surfaces));
    const auto b = predict_all(loaded, data.x, 4096, SurfaceIds(data.surfaces));
    for (std::size_t t = 0; t < a.size(); ++t) CHECK(a[t] == b[t]);
}

TEST_CASE("Tower trees: bad surfaces give clear errors", "[surfaces][errors]") {
    const auto tasks = three_task_kinds();
    Model<MMoE<double>> model(with_surfaces(small_mmoe(tasks), 3, false), 1);
    const Matrix<double> x = random_matrix(5, 4, 1);
    InferenceWorkspace<double> ws;
    const std::vector<Index> unknown = {0, 1, 3, 2}, negative = {0, -1, 0, 0}, short_ids = {0, 1};
    CHECK_THROWS_WITH(model.forward(x, unknown), Contains("surface 3 of sample 2 is unknown") && Contains("0 to 2"));
    CHECK_THROWS_AS(model.forward(x, unknown), config_error);
    CHECK_THROWS_WITH(model.predict(x, ws, negative), Contains("surface -1 of sample 1"));
    CHECK_THROWS_AS(model.forward(x, short_ids), shape_error);
    CHECK_THROWS_WITH(model.forward(x, short_ids), Contains("2 surface ids for a batch of 4"));
    CHECK_THROWS_WITH(model.predict(x, ws, Index(5)), Contains("surface 5 is unknown"));
    CHECK_THROWS_WITH(model.forward(x), Contains("3 surfaces") && Contains("pass each sample's surface"));
    CHECK_THROWS_WITH(model.predict(x, ws), Contains("pass each sample's surface"));

    MMoESpec bad = small_mmoe(tasks);
    bad.surfaces = 0;
    CHECK_THROWS_WITH(Model<MMoE<double>>(bad), Contains("surfaces must be at least 1, got 0"));

    // A model without surfaces takes surface 0 only.
    Model<MMoE<double>> plain(small_mmoe(tasks), 1);
    CHECK_NOTHROW(plain.forward(x, Index(0)));
    CHECK_THROWS_WITH(plain.forward(x, Index(1)), Contains("surface 1 is unknown (the model has 1 surface: 0)"));

    // Data sets: a missing or short surface column, an unknown id, a surface without training samples.
    MultiTaskData<double> data;
    data.x = random_matrix(5, 6, 2);
    data.labels = labels_for(tasks, 6, 3);
    MultiTaskLoss<double> loss(tasks);
    FitOptions o;
    o.out = nullptr;
    CHECK_THROWS_WITH(fit(model, loss, data, nullptr, o), Contains("the model has 3 surfaces but the data names none"));
    data.surfaces = {0, 1, 0, 1, 0};
    CHECK_THROWS_WITH(fit(model, loss, data, nullptr, o),
                      Contains("MultiTaskData(train)") && Contains("5 surface ids for a batch of 6"));
    data.surfaces = {0, 1, 0, 1, 0, 7};
    CHECK_THROWS_WITH(evaluate(model, data), Contains("surface 7 of sample 5 is unknown"));
    data.surfaces = {0, 1, 0, 1, 0, 1};
    CHECK_THROWS_WITH(fit(model, loss, data, nullptr, o), Contains("surface 2 has no training samples"));
}

}  // namespace test_surfaces
