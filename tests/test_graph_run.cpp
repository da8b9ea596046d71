// Running model graphs (moe::graph::GraphModel): the corrected MMoE compiles with its Linears fused,
// names its parameters as PyTorch would, passes the generic gradient checker in double, trains with
// fit, predicts, and survives a model file; every op's forward and backward is gradient-checked in
// small graphs (broadcasting matmul, einsum with permuted outputs and summed letters, bmm, BatchNorm
// on [B, C] and [B, C, L], LayerNorm, dropout with frozen masks, the shape ops).
#include <cstdio>
#include <fstream>
#include <moe/graph/graph_data.hpp>
#include <moe/graph/graph_model_file.hpp>
#include <moe/moe.hpp>
#include <moe/testing/gradcheck.hpp>
#include <string>

#include "support/catch.hpp"
#include "support/fixtures.hpp"

namespace test_graph_run {

using namespace moe;
using namespace moe::graph;
using Catch::Matchers::Contains;

namespace {
constexpr double kTol = 1e-6;

GraphModelSpec fixture_spec(const std::string& name) {
    return graph_spec_from_file(moe::testing::fixture_path("graph/" + name));
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

TEST_CASE("Graph model: the corrected MMoE compiles, fuses its experts and gates, and names parameters as PyTorch",
          "[graph]") {
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

TEST_CASE("Graph model: the corrected MMoE passes the gradient checker, and predict is the heads of forward",
          "[graph][gradcheck]") {
    CHECK(gradcheck(fixture_spec("mmoe_corrected.yaml")) < kTol);

    Model<GraphModel<double>> model(fixture_spec("mmoe_corrected.yaml"), 2);
    model.eval();
    const Matrix<double> x = moe::testing::random_matrix(20, 300, 3);
    const auto& z = model.forward(x);
    const Matrix<double> click = z[0], watch = z[1];
    InferenceWorkspace<double> ws;
    const auto& p = model.predict(x, ws);
    CHECK((Matrix<double>(p[0]) - click.unaryExpr([](double v) { return 1 / (1 + std::exp(-v)); }))
              .cwiseAbs()
              .maxCoeff() < 1e-12);
    CHECK((Matrix<double>(p[1]) - watch).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("Graph model: every op passes the gradient checker (fixtures ops_norms, ops_matmul, ops_einsum)",
          "[graph][gradcheck]") {
    // ops_norms: activations, LayerNorm, BatchNorm1d, dropout (masks frozen), functional ops, add with alpha.
    CHECK(gradcheck(fixture_spec("ops_norms.yaml")) < kTol);
    // ops_matmul: matmul with broadcast batch dimensions, mean over two dims, cat, the shape ops,
    // add and mul broadcasting and with a scalar, sum with keepdim; multiclass and regression outputs.
    CHECK(gradcheck(fixture_spec("ops_matmul.yaml")) < kTol);
    // ops_einsum: bmm, BatchNorm1d on [B, C, L], softmax over a middle dim, einsum with a permuted
    // output, summed letters and a batch letter inside, stack on dim 0 and the transpose back.
    CHECK(gradcheck(fixture_spec("ops_einsum.yaml")) < kTol);
    // blocks_mmoe: moe.MMoE (BatchNorm in the experts), torch.select, moe.MLP towers with BatchNorm and dropout.
    CHECK(gradcheck(fixture_spec("blocks_mmoe.yaml")) < kTol);
    // blocks_ple: moe.PLE of two levels (BatchNorm in the experts), towers; a multiclass output.
    CHECK(gradcheck(fixture_spec("blocks_ple.yaml")) < kTol);
}

TEST_CASE("Graph model: the check's parameter count is the model's, for every fixture", "[graph]") {
    for (const char* file : {"mmoe_corrected.yaml", "ops_norms.yaml", "ops_matmul.yaml", "ops_einsum.yaml",
                             "blocks_mmoe.yaml", "blocks_ple.yaml"}) {
        INFO(file);
        Model<GraphModel<float>> model(fixture_spec(file), 1);
        CHECK(model.graph().params() == double(model.params().size()));
    }
}

TEST_CASE("Graph model: block nodes name their parameters as the library's modules do", "[graph]") {
    Model<GraphModel<float>> model(fixture_spec("blocks_mmoe.yaml"), 1);
    for (const char* name : {"mixture.experts.0.0.weight", "mixture.experts.2.2.bias", "mixture.experts.1.3.weight",
                             "mixture.gates.0.weight", "mixture.gates.1.bias", "click_tower.0.weight",
                             "click_tower.2.weight", "click_tower.4.bias", "watch_tower.2.bias"})
        CHECK(model.params().contains(name));
    std::vector<std::string> bns;
    model.for_each_batchnorm("", [&](const std::string& name, BatchNorm1d<float>&) { bns.push_back(name); });
    CHECK(bns == std::vector<std::string>{"mixture.experts.{}.2", "click_tower.2"});
    CHECK_THROWS_WITH(
        Model<GraphModel<float>>(GraphModelSpec{"inputs:\n  x: {shape: [null, 4]}\ngraph:\n"
                                                "  - {name: m, type: moe.MLP, params: {sizes: [5, 1]}, inputs: [x]}\n"
                                                "outputs:\n  y: m.output\n",
                                                "b.yaml"}),
        Contains("b.yaml:4:5: node 'm' (moe.MLP): its input [B, 4] must end in sizes[0] = 5"));
    CHECK_THROWS_WITH(Model<GraphModel<float>>(GraphModelSpec{
                          "inputs:\n  x: {shape: [null, 4]}\ngraph:\n"
                          "  - {name: m, type: moe.MMoE, params: {experts: 2, expert_dim: 3, gates: 0}, inputs: [x]}\n"
                          "outputs:\n  y: m.output\n",
                          "b.yaml"}),
                      Contains("experts, expert_dim and gates must be positive"));
    for (const std::string block : {"moe.MMoE, params: {experts: 2, expert_dim: 3, gates: 1}",
                                    "moe.PLE, params: {tasks: 2, expert_dim: 3}"})
        CHECK_THROWS_WITH(Model<GraphModel<float>>(GraphModelSpec{"inputs:\n  x: {shape: [null, 2, 4]}\ngraph:\n"
                                                                  "  - {name: m, type: " + block + ", inputs: [x]}\n"
                                                                  "outputs:\n  y: m.output\n",
                                                                  "b.yaml"}),
                          Contains("expects an input [B, features], got [B, 2, 4]"));
    CHECK_THROWS_WITH(Model<GraphModel<float>>(
                          GraphModelSpec{"inputs:\n  x: {shape: [null, 4]}\ngraph:\n"
                                         "  - {name: m, type: torch.select, params: {dim: 1, index: 4}, inputs: [x]}\n"
                                         "outputs:\n  y: m.output\n",
                                         "b.yaml"}),
                      Contains("index 4 is out of range for dim 1 of size 4"));
}

TEMPLATE_TEST_CASE(
    "Graph model: outputs, loss, every gradient and one Adam step match the PyTorch interpreter "
    "(tools/graph_torch.py)",
    "[graph][parity]", float, double) {
    using T = TestType;
    const std::string path = moe::testing::fixture_path(std::string("graph/reference_") +
                                                        (std::is_same_v<T, double> ? "f64" : "f32") + ".safetensors");
    const SafetensorsFile f = read_safetensors(path);
    for (const char* name : {"mmoe", "matmul", "einsum", "norms", "blocks", "blocks_ple"}) {
        INFO(name);
        const std::string n = name;
        const nlohmann::json c = nlohmann::json::parse(f.metadata.at("case." + n));
        // The case's state_dict (parameters and BatchNorm buffers) through the library's loader.
        SafetensorsFile state;
        const std::string prefix = "param." + n + ".";
        for (const auto& [key, tensor] : f.tensors)
            if (key.rfind(prefix, 0) == 0) state.tensors[key.substr(prefix.size())] = tensor;
        const std::string state_path = "graph_parity_" + n + ".safetensors";
        write_safetensors(state_path, state);
        Model<GraphModel<T>> model =
            load_state_dict<GraphModel<T>>(state_path, fixture_spec(c.at("file").get<std::string>()));
        std::remove(state_path.c_str());
        auto& store = model.params();
        model.set_training(c.at("mode") == "train");
        const Matrix<T> x = f.at(n + ".x").template batch<T>(), labels = f.at(n + ".labels").template batch<T>();
        MultiTaskLoss<T> loss(model.tasks());
        model.zero_grad();
        const auto& out = model.forward(x);
        for (std::size_t k = 0; k < out.size(); ++k)
            MOE_CHECK_CLOSE(Matrix<T>(out[k]), f.at(n + ".out." + std::to_string(k)).template batch<T>(), T);
        const T total = loss.forward(out, labels);
        MOE_CHECK_CLOSE((Matrix<T>(1, 1) << total).finished(), f.at(n + ".loss").template matrix<T>(), T);
        MOE_CHECK_CLOSE(Matrix<T>(model.backward(loss.backward(), true)), f.at(n + ".dx").template batch<T>(), T);
        for (const auto& e : store.entries()) {
            INFO(e.name);
            MOE_CHECK_CLOSE(Matrix<T>(store.grad(e.name)), f.at(n + ".grad." + e.name).template matrix<T>(), T);
        }
        AdamOptions o;
        o.lr = 0.01;
        Adam<T> adam(o);
        const Vector<T> before = store.values();
        adam.step(store.values(), store.grads());
        for (const auto& e : store.entries()) {
            INFO(e.name << " after Adam");
            const Matrix<T> ours = store.value(e.name), theirs = f.at(n + ".after." + e.name).template matrix<T>();
            // An element whose gradient is at rounding-noise level (a unit that BatchNorm's batch mean
            // almost cancels, a dead ReLU's bias) holds noise on both sides, which Adam turns into a
            // step of up to lr of either sign in float32: there both sides must have moved by at most
            // lr, and the other elements must match.
            const Matrix<T> g = f.at(n + ".grad." + e.name).template matrix<T>();
            using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
            const Matrix<T> start =
                Eigen::Map<const RowMajor>(before.data() + e.offset, e.rows, e.cols);  // the store is row-major
            Matrix<T> a = ours, b = theirs;
            for (Index i = 0; i < g.size(); ++i)
                if (std::abs(g.data()[i]) < T(1e-5)) {
                    CHECK(std::abs(a.data()[i] - start.data()[i]) <= T(0.0101));
                    CHECK(std::abs(b.data()[i] - start.data()[i]) <= T(0.0101));
                    a.data()[i] = b.data()[i] = T(0);
                }
            MOE_CHECK_CLOSE(a, b, T);
        }
    }
}

TEST_CASE("Graph model: fit trains the corrected MMoE, and a model file holds the YAML and gives the same predictions",
          "[graph]") {
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

TEMPLATE_TEST_CASE(
    "Graph model: a model file written by PyTorch (tools/graph_torch.py) loads and predicts as PyTorch does",
    "[graph][parity]", float, double) {
    using T = TestType;
    const std::string suffix = std::is_same_v<T, double> ? "f64" : "f32";
    const auto model = load<GraphModel<T>>(moe::testing::fixture_path("graph/mmoe_torch_" + suffix + ".safetensors"));
    const SafetensorsFile f =
        read_safetensors(moe::testing::fixture_path("graph/reference_" + suffix + ".safetensors"));
    InferenceWorkspace<T> ws;
    const auto& p = model.predict(f.at("mmoe.x").template batch<T>(), ws);
    for (std::size_t k = 0; k < p.size(); ++k)
        MOE_CHECK_CLOSE(Matrix<T>(p[k]), f.at("mmoe.predict." + std::to_string(k)).template batch<T>(), T);
}

TEST_CASE(
    "Graph data: a CSV file is read by the inputs' columns and the labels, and bad files are refused with their place",
    "[graph]") {
    const CheckedGraph g =
        check_graph(parse_graph_yaml("inputs:\n  x: {shape: [null, 2], columns: [a, b]}\ngraph:\n  - {name: l, type: "
                                     "torch.nn.Linear, params: {in_features: 2, out_features: 1}, inputs: [x]}\n"
                                     "outputs:\n  y: l.output\n",
                                     "m.yaml"));
    auto write = [](const std::string& path, const std::string& text) { std::ofstream(path) << text; };
    const std::string path = "graph_data_test.csv";
    write(path, "b,extra,a,y\n1,9,2,1\n3,9,4,\n");
    const auto d = read_graph_csv<double>(path, g, {"y"});
    CHECK(d.x == (Matrix<double>(2, 2) << 2, 4, 1, 3).finished());
    CHECK(d.labels(0, 0) == 1);
    CHECK(d.mask == (Matrix<double>(1, 2) << 1, 0).finished());  // an empty label is a missing one
    write(path, "b,y\n1,1\n");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y"}),
                      Contains(path + ": the columns do not match the model's: missing a (input); the file has b, y"));
    write(path, "a,b,y\n1,2,1\n1,two,1\n");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y"}),
                      Contains(path + ":3: column 'b' is 'two', expected a finite number"));
    write(path, "a,b,y\n1,2\n");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y"}), Contains(path + ":2: 2 fields, the header has 3"));
    write(path, "a,b,y\n1,nan,1\n");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y"}), Contains("expected a finite number"));
    write(path, "a,b,y\n1,2,1\n");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y", "z"}), Contains("2 label columns for the model's 1 tasks"));
    write(path, "");
    CHECK_THROWS_WITH(read_graph_csv<double>(path, g, {"y"}), Contains("the data file is empty"));
    std::remove(path.c_str());
    CHECK_THROWS_WITH(read_graph_csv<double>("no/such.csv", g, {"y"}), Contains("no/such.csv: cannot open"));
    const CheckedGraph nameless =
        check_graph(parse_graph_yaml("inputs:\n  x: {shape: [null, 2]}\ngraph:\n  - {name: l, type: torch.nn.Linear, "
                                     "params: {in_features: 2, out_features: 1}, inputs: [x]}\n"
                                     "outputs:\n  y: l.output\n",
                                     "m.yaml"));
    CHECK_THROWS_WITH(read_graph_csv<double>(path, nameless, {"y"}), Contains("input 'x' has no columns"));
}

TEST_CASE(
    "Graph model: a model file whose YAML does not check, or whose tensors miss a node, is refused naming the file",
    "[graph]") {
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

#ifdef _OPENMP
TEST_CASE("Graph model: training gives the same bits on 1, 2 and 3 threads, with BatchNorm and dropout",
          "[graph][threads]") {
    // Every loop of the kernels is cut by the shape alone (fixed chunks, per-sample products, the
    // library's GEMM tiles), never by the thread count: the bits must not change with it.
    for (const char* file :
         {"mmoe_corrected.yaml", "ops_norms.yaml", "ops_einsum.yaml", "blocks_mmoe.yaml", "blocks_ple.yaml"}) {
        INFO(file);
        std::vector<Vector<float>> params;
        for (int threads : {1, 2, 3}) {
            const int saved = omp_get_max_threads();
            omp_set_num_threads(threads);
            moe::detail::always_parallel() = true;
            Model<GraphModel<float>> model(fixture_spec(file), 7);
            MultiTaskData<float> data;
            const Index n = 700;
            data.x = moe::testing::random_matrix(model.in_features(), n, 4).cast<float>();
            data.labels = moe::testing::labels_for(model.tasks(), n, 5).cast<float>();
            MultiTaskLoss<float> loss(model.tasks());
            FitOptions o;
            o.epochs = 2;
            o.batch_size = 350;
            o.out = nullptr;
            fit(model, loss, data, nullptr, o);
            moe::detail::always_parallel() = false;
            omp_set_num_threads(saved);
            params.push_back(model.params().values());
        }
        CHECK(params[0] == params[1]);
        CHECK(params[0] == params[2]);
    }
}
#endif

TEST_CASE("Graph model: bad batches are refused naming the graph", "[graph]") {
    Model<GraphModel<float>> model(fixture_spec("mmoe_corrected.yaml"), 4);
    const Matrix<float> x = Matrix<float>::Zero(19, 4);
    CHECK_THROWS_WITH(model.forward(x), Contains("mmoe_corrected.yaml") && Contains("19") && Contains("20"));
    InferenceWorkspace<float> ws;
    CHECK_THROWS_WITH(model.predict(x, ws), Contains("mmoe_corrected.yaml"));
}

}  // namespace test_graph_run
