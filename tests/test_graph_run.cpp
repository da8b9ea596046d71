// Running model graphs (moe::graph::GraphModel): the corrected MMoE compiles with its Linears fused,
// names its parameters as PyTorch would, passes the generic gradient checker in double, trains with
// fit, predicts, and survives a model file; every op's forward and backward is gradient-checked in
// small graphs (broadcasting matmul, einsum with permuted outputs and summed letters, bmm, BatchNorm
// on [B, C] and [B, C, L], LayerNorm, dropout with frozen masks, the shape ops).
#include <cstdio>
#include <string>

#include "support/catch.hpp"
#include "support/fixtures.hpp"

#include <moe/graph/graph_model_file.hpp>
#include <moe/moe.hpp>
#include <moe/testing/gradcheck.hpp>

namespace test_graph_run {

using namespace moe;
using namespace moe::graph;
using Catch::Matchers::Contains;

namespace {
constexpr double kTol = 1e-6;

GraphModelSpec fixture_spec(const std::string& name) { return graph_spec_from_file(moe::testing::fixture_path("graph/" + name)); }

/// A graph on one input x [B, 6] with the given node lines; outputs as given.
GraphModelSpec small_graph(const std::string& nodes, const std::string& outputs) {
    return {"inputs:\n  x: {shape: [null, 6]}\ngraph:\n" + nodes + "outputs:\n" + outputs, "small.yaml"};
}

double gradcheck(const GraphModelSpec& spec, Index batch = 7) {
    Model<GraphModel<double>> model(spec, 5);
    model.freeze_dropout();
    MultiTaskLoss<double> loss(model.tasks());
    const auto r = moe::testing::check_model(model, batch, loss);
    if (r.max_error >= kTol) UNSCOPED_INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}
}  // namespace

TEST_CASE("Graph model: the corrected MMoE compiles, fuses its experts and gates, and names parameters as PyTorch", "[graph]") {
    Model<GraphModel<float>> model(fixture_spec("mmoe_corrected.yaml"), 1);
    CHECK(model.in_features() == 20);
    REQUIRE(model.tasks().size() == 2);
    CHECK(model.tasks()[0].name == "click");
    CHECK(model.tasks()[0].kind == TaskKind::binary);
    CHECK(model.tasks()[1].kind == TaskKind::regression);
    const auto groups = model.fused_groups();
    REQUIRE(groups.size() == 1);
    CHECK(groups[0] == std::vector<std::string>{"expert_1", "expert_2", "expert_3", "gate_click", "gate_watch"});
    CHECK(model.params().size() == 8384);
    const auto& w = model.params().entry("expert_2.weight");
    CHECK(w.rows == 64);
    CHECK(w.cols == 20);
    CHECK(model.params().entry("gate_watch.bias").rows == 3);
    CHECK(model.params().entry("tower_click.weight").cols == 32);
}

TEST_CASE("Graph model: the corrected MMoE passes the gradient checker, and predict is the heads of forward", "[graph][gradcheck]") {
    CHECK(gradcheck(fixture_spec("mmoe_corrected.yaml")) < kTol);

    Model<GraphModel<double>> model(fixture_spec("mmoe_corrected.yaml"), 2);
    model.eval();
    const Matrix<double> x = moe::testing::random_matrix(20, 300, 3);
    const auto& z = model.forward(x);
    const Matrix<double> click = z[0], watch = z[1];
    InferenceWorkspace<double> ws;
    const auto& p = model.predict(x, ws);
    CHECK((Matrix<double>(p[0]) - click.unaryExpr([](double v) { return 1 / (1 + std::exp(-v)); })).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((Matrix<double>(p[1]) - watch).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("Graph model: activations, LayerNorm, BatchNorm and dropout pass the gradient checker", "[graph][gradcheck]") {
    const auto spec = small_graph(R"(
  - {name: lin, type: torch.nn.Linear, params: {in_features: 6, out_features: 8}, inputs: [x]}
  - {name: gelu, type: torch.nn.GELU, inputs: [lin.output]}
  - {name: ln, type: torch.nn.LayerNorm, params: {normalized_shape: [8]}, inputs: [gelu.output]}
  - {name: bn, type: torch.nn.BatchNorm1d, params: {num_features: 8}, inputs: [ln.output]}
  - {name: sig, type: torch.nn.Sigmoid, inputs: [bn.output]}
  - {name: drop, type: torch.nn.Dropout, params: {p: 0.3}, inputs: [sig.output]}
  - {name: tanh, type: torch.nn.Tanh, inputs: [drop.output]}
  - {name: relu, type: torch.nn.functional.relu, inputs: [tanh.output]}
  - {name: fsig, type: torch.nn.functional.sigmoid, inputs: [lin.output]}
  - {name: both, type: torch.add, inputs: [relu.output, fsig.output], params: {alpha: 0.5}}
  - {name: head, type: torch.nn.Linear, params: {in_features: 8, out_features: 1}, inputs: [both.output]}
)",
                                  "  y: head.output\n");
    CHECK(gradcheck(spec) < kTol);
}

TEST_CASE("Graph model: matmul with broadcast batch dimensions, cat, reductions and the shape ops pass the gradient checker",
          "[graph][gradcheck]") {
    const auto spec = small_graph(R"(
  - {name: la, type: torch.nn.Linear, params: {in_features: 6, out_features: 12}, inputs: [x]}
  - {name: a, type: torch.reshape, params: {shape: [-1, 1, 4, 3]}, inputs: [la.output]}
  - {name: lb, type: torch.nn.Linear, params: {in_features: 6, out_features: 30}, inputs: [x]}
  - {name: b, type: torch.reshape, params: {shape: [-1, 2, 3, 5]}, inputs: [lb.output]}
  - {name: ab, type: torch.matmul, inputs: [a.output, b.output]}
  - {name: m, type: torch.mean, params: {dim: [1, 3]}, inputs: [ab.output]}
  - {name: lc, type: torch.nn.Linear, params: {in_features: 6, out_features: 2, bias: false}, inputs: [x]}
  - {name: c, type: torch.cat, params: {dim: 1}, inputs: [m.output, lc.output]}
  - {name: u, type: torch.unsqueeze, params: {dim: 2}, inputs: [c.output]}
  - {name: t, type: torch.transpose, params: {dim0: 1, dim1: 2}, inputs: [u.output]}
  - {name: s, type: torch.squeeze, params: {dim: 1}, inputs: [t.output]}
  - {name: ld, type: torch.nn.Linear, params: {in_features: 6, out_features: 1}, inputs: [x]}
  - {name: bc, type: torch.add, inputs: [s.output, ld.output]}
  - {name: prod, type: torch.mul, inputs: [bc.output, c.output]}
  - {name: half, type: torch.mul, params: {other: 0.5}, inputs: [prod.output]}
  - {name: shift, type: torch.add, params: {other: 1.5}, inputs: [half.output]}
  - {name: classes, type: torch.nn.Linear, params: {in_features: 6, out_features: 3}, inputs: [shift.output]}
  - {name: total, type: torch.sum, params: {dim: 1, keepdim: true}, inputs: [shift.output]}
)",
                                  "  kind: {output: classes.output, task: multiclass, classes: 3}\n  amount: {output: total.output, task: regression}\n");
    CHECK(gradcheck(spec) < kTol);
}

TEST_CASE("Graph model: einsum (permuted output, summed letters), bmm, stack on dim 0, softmax and BatchNorm on [B, C, L] pass "
          "the gradient checker",
          "[graph][gradcheck]") {
    const auto spec = small_graph(R"(
  - {name: la, type: torch.nn.Linear, params: {in_features: 6, out_features: 12}, inputs: [x]}
  - {name: a, type: torch.reshape, params: {shape: [-1, 3, 4]}, inputs: [la.output]}
  - {name: lb, type: torch.nn.Linear, params: {in_features: 6, out_features: 8}, inputs: [x]}
  - {name: b, type: torch.reshape, params: {shape: [-1, 4, 2]}, inputs: [lb.output]}
  - {name: ab, type: torch.bmm, inputs: [a.output, b.output]}
  - {name: bn, type: torch.nn.BatchNorm1d, params: {num_features: 3}, inputs: [ab.output]}
  - {name: sm, type: torch.nn.functional.softmax, params: {dim: 1}, inputs: [bn.output]}
  - {name: e1, type: torch.einsum, params: {equation: "bij,bjk->bki"}, inputs: [a.output, b.output]}
  - {name: e2, type: torch.einsum, params: {equation: "bij,bk->bk"}, inputs: [a.output, lb.output]}
  - {name: e3, type: torch.einsum, params: {equation: "bik,bki->bi"}, inputs: [sm.output, e1.output]}
  - {name: st, type: torch.stack, inputs: [e3.output, e3.output]}
  - {name: tr, type: torch.transpose, params: {dim0: 0, dim1: 1}, inputs: [st.output]}
  - {name: flat, type: torch.reshape, params: {shape: [-1, 6]}, inputs: [tr.output]}
  - {name: head, type: torch.nn.Linear, params: {in_features: 6, out_features: 1}, inputs: [flat.output]}
  - {name: head2, type: torch.nn.Linear, params: {in_features: 8, out_features: 1}, inputs: [e2.output]}
)",
                                  "  y: head.output\n  z: head2.output\n");
    CHECK(gradcheck(spec) < kTol);
}

TEST_CASE("Graph model: fit trains the corrected MMoE, and a model file holds the YAML and gives the same predictions", "[graph]") {
    using T = float;
    Model<GraphModel<T>> model(fixture_spec("mmoe_corrected.yaml"), 4);
    // Labels from a fixed function of the features: click from one direction, watch from another.
    const Index n = 512;
    MultiTaskData<T> data;
    data.x = Matrix<T>(moe::testing::random_matrix(20, n, 9).cast<T>());
    data.labels.resize(2, n);
    for (Index j = 0; j < n; ++j) {
        data.labels(0, j) = data.x(0, j) + data.x(1, j) > 0 ? T(1) : T(0);
        data.labels(1, j) = std::abs(data.x(2, j) - data.x(3, j));
    }
    MultiTaskLoss<T> loss(model.tasks());
    FitOptions o;
    o.epochs = 8;
    o.batch_size = 64;
    o.lr = 0.01;
    o.out = nullptr;
    const FitHistory h = fit(model, loss, data, nullptr, o);
    REQUIRE(h.epochs.size() == 8);
    CHECK(h.epochs.back().train_loss < 0.7 * h.epochs.front().train_loss);

    const std::string path = "graph_model_roundtrip.safetensors";
    save(model, path);
    const auto loaded = load<GraphModel<T>>(path);
    std::remove(path.c_str());
    CHECK(loaded.spec().yaml == model.spec().yaml);
    InferenceWorkspace<T> a, b;
    const auto& pa = model.predict(data.x, a);
    const auto& pb = loaded.predict(data.x, b);
    for (std::size_t t = 0; t < 2; ++t) CHECK(Matrix<T>(pa[t]) == Matrix<T>(pb[t]));
}

TEST_CASE("Graph model: a model file whose YAML does not check, or whose tensors miss a node, is refused naming the file", "[graph]") {
    Model<GraphModel<float>> model(fixture_spec("mmoe_corrected.yaml"), 4);
    const std::string path = "graph_model_bad.safetensors";
    save(model, path);
    SafetensorsFile file = read_safetensors(path);
    file.metadata["config"] = nlohmann::json{{"yaml", "inputs: {}\n"}}.dump();
    write_safetensors(path, file);
    CHECK_THROWS_WITH(load<GraphModel<float>>(path), Contains(path) && Contains("the file has no 'graph' block"));
    file = read_safetensors(path);
    file.metadata["config"] = spec_to_json(model.spec()).dump();
    file.tensors.erase("gate_watch.weight");
    write_safetensors(path, file);
    CHECK_THROWS_WITH(load<GraphModel<float>>(path), Contains(path) && Contains("gate_watch.weight"));
    std::remove(path.c_str());
}

TEST_CASE("Graph model: bad batches are refused naming the graph", "[graph]") {
    Model<GraphModel<float>> model(fixture_spec("mmoe_corrected.yaml"), 4);
    const Matrix<float> x = Matrix<float>::Zero(19, 4);
    CHECK_THROWS_WITH(model.forward(x), Contains("mmoe_corrected.yaml") && Contains("19") && Contains("20"));
    InferenceWorkspace<float> ws;
    CHECK_THROWS_WITH(model.predict(x, ws), Contains("mmoe_corrected.yaml"));
}

}  // namespace test_graph_run
