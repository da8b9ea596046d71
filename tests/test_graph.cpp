// Model graphs from YAML (moe::graph): the loader's strictness, the graph checks (names, references,
// order, outputs) and every op's shape rule with the symbolic batch, each error tested for its text
// (file, line and column, node, shapes). Its own program: it links yaml-cpp.
#include <string>

#include "support/catch.hpp"
#include "support/fixtures.hpp"

#include <moe/graph/graph_check.hpp>
#include <moe/graph/yaml_loader.hpp>

namespace {

using namespace moe::graph;
using Catch::Matchers::Contains;

/// A graph with inputs x [B, 20], y [B, 3, 64], g [B, 3], v [B, 64, 1] and the given node lines (YAML, indented as list items), whose
/// output is `out`, the logits [B, 20] of a multiclass task.
std::string graph_text(const std::string& nodes, const std::string& out = "last.output") {
    return "inputs:\n  x: {shape: [null, 20]}\n  y: {shape: [null, 3, 64]}\n  g: {shape: [null, 3]}\n  v: {shape: [null, 64, 1]}\ngraph:\n" +
           nodes + "outputs:\n  task: {output: " + out + ", task: multiclass, classes: 20}\n";
}
CheckedGraph check(const std::string& text) { return check_graph(parse_graph_yaml(text, "m.yaml")); }
/// The output shape of one node reading `inputs`, as a string (the graph's output is x itself, so
/// the node may have any shape).
std::string shape_of(const std::string& type, const std::string& params, const std::string& inputs) {
    const auto g = check(graph_text("  - {name: probe, type: " + type + ", params: {" + params + "}, inputs: [" + inputs + "]}\n", "x"));
    return to_string(g.values.back());
}

}  // namespace

TEST_CASE("Graph: the source's MMoE gives the shape error at load time, naming node, line, shapes and the fix", "[graph]") {
    const std::string path = moe::testing::fixture_path("graph/mmoe_source.yaml");
    try {
        check_graph(load_graph_yaml(path));
        FAIL("no error");
    } catch (const moe::config_error& e) {
        const std::string m = e.what();
        CHECK_THAT(m, Contains(path + ":43:5: node 'mix_click' (torch.matmul)"));
        CHECK_THAT(m, Contains("contracts the last dimension of its first input [B, 3] (3) with the second-to-last dimension of its "
                               "second [3, B, 64] (B)"));
        CHECK_THAT(m, Contains("they differ for every batch size but 3"));
        CHECK_THAT(m, Contains("torch.stack(..., dim=1) gives [B, 3, 64]"));
        CHECK_THAT(m, Contains("torch.einsum('be,bed->bd', gates, experts) gives [B, 64]"));
    }
}

TEST_CASE("Graph: the corrected MMoE checks, with every node's shape, its parameters and FLOPs", "[graph]") {
    const CheckedGraph g = check_graph(load_graph_yaml(moe::testing::fixture_path("graph/mmoe_corrected.yaml")));
    REQUIRE(g.nodes.size() == 19);
    auto shape = [&](const std::string& name) {
        for (std::size_t i = 0; i < g.nodes.size(); ++i)
            if (g.nodes[i].name == name) return to_string(g.nodes[i].out);
        return std::string("?");
    };
    CHECK(shape("experts") == "[B, 3, 64]");
    CHECK(shape("gate_click_softmax") == "[B, 3]");
    CHECK(shape("mix_click") == "[B, 64]");
    CHECK(shape("tower_watch") == "[B, 1]");
    // 3 experts 20 -> 64, 2 gates 20 -> 3, 2 towers 64 -> 32 -> 1, with biases.
    CHECK(g.params() == 3 * (20 * 64 + 64) + 2 * (20 * 3 + 3) + 2 * (64 * 32 + 32 + 32 + 1));
    // Per sample: experts 3 x (2 x 20 x 64 + 64 ReLU); per task gate 2 x 20 x 3, softmax 4 x 3, einsum
    // 2 x 3 x 64, tower 2 x 64 x 32 + 32 ReLU + 2 x 32.
    CHECK(g.flops_per_sample() == 3 * (2 * 20 * 64 + 64) + 2 * (2 * 20 * 3 + 4 * 3 + 2 * 3 * 64 + 2 * 64 * 32 + 32 + 2 * 32));
    CHECK(g.warnings.empty());
    CHECK(g.outputs.size() == 2);
    CHECK(g.spec.inputs.front().columns.size() == 20);
}

TEST_CASE("Graph loader: syntax errors, unknown keys, wrong kinds, missing blocks, with line and column in each", "[graph][errors]") {
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: [a\ngraph: []\n", "m.yaml"), Contains("m.yaml:2:") && Contains("YAML syntax error"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {}\ngraph: []\noutputs: {}\nextra: 1\n", "m.yaml"),
                      Contains("m.yaml:4:1: the file: unknown key 'extra' (expected graph, inputs, outputs)"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {}\ngraph: []\n", "m.yaml"), Contains("the file has no 'outputs' block"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph: {a: 1}\noutputs: {t: x}\n", "m.yaml"),
                      Contains("m.yaml:2:8: graph must be a list, got a map"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [5, 2]}}\ngraph: []\noutputs: {t: x}\n", "m.yaml"),
                      Contains("input 'x'.shape must start with null, the batch dimension, got [5, 2]"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, two]}}\ngraph: []\noutputs: {t: x}\n", "m.yaml"),
                      Contains("expected a positive size or null (the batch), got 'two'"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2], dtype: int8}}\ngraph: []\noutputs: {t: x}\n", "m.yaml"),
                      Contains("dtype: expected float32 or float64, got 'int8'"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2], columns: [a]}}\ngraph: []\noutputs: {t: x}\n", "m.yaml"),
                      Contains("input 'x' has 1 columns for the shape [B, 2]"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph:\n  - {name: a, type: torch.nn.ReLU, input: [x]}\noutputs: {t: a.output}\n", "m.yaml"),
                      Contains("m.yaml:3:36: a node: unknown key 'input' (expected inputs, name, params, type)"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph:\n  - {name: a, type: torch.nn.ReLU}\noutputs: {t: a.output}\n", "m.yaml"),
                      Contains("m.yaml:3:5: node 'a' has no inputs"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph:\n  - {name: a, type: torch.nn.Dropout, params: {p: 0.1, p: 0.2}, inputs: [x]}\noutputs: {t: a.output}\n", "m.yaml"),
                      Contains("m.yaml:3:56: node 'a'.params: key 'p' appears twice"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph: []\noutputs: {t: x, t: x}\n", "m.yaml"),
                      Contains("outputs: key 't' appears twice"));
    CHECK_THROWS_WITH(parse_graph_yaml("inputs: {x: {shape: [null, 2]}}\ngraph: []\noutputs: {[t]: x}\n", "m.yaml"),
                      Contains("m.yaml:3:11: outputs: a key must be a scalar, got a list"));
    CHECK_THROWS_AS(load_graph_yaml("/nonexistent/m.yaml"), moe::io_error);
}

TEST_CASE("Graph checks: unknown op, params, references, order, cycles, duplicates, outputs", "[graph][errors]") {
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Relu, inputs: [x]}\n")),
                      Contains("m.yaml:7:5: node 'last': unknown type 'torch.nn.Relu' (known: ") && Contains("torch.nn.ReLU"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Linear, params: {in_features: 20}, inputs: [x]}\n")),
                      Contains("node 'last' (torch.nn.Linear): missing param 'out_features'"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Linear, params: {in_features: 20, out_features: 4, bais: false}, inputs: [x]}\n")),
                      Contains("m.yaml:7:90: node 'last' (torch.nn.Linear): unknown param 'bais' (expected bias, in_features, out_features)"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Linear, params: {in_features: 20, out_features: four}, inputs: [x]}\n")),
                      Contains("param 'out_features' must be an integer, got 'four'"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Linear, params: {in_features: 20, out_features: [4]}, inputs: [x]}\n")),
                      Contains("param 'out_features' must be a scalar, got a list"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Dropout, params: {p: 1.5}, inputs: [x]}\n")),
                      Contains("p must be in [0, 1), got 1.5"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.ReLU, inputs: [x, x]}\n")), Contains("takes 1 input, got 2"));
    for (const char* bad : {"nan", ".inf", "1e999"})
        CHECK_THROWS_WITH(check(graph_text(std::string("  - {name: last, type: torch.nn.Dropout, params: {p: ") + bad + "}, inputs: [x]}\n")),
                          Contains("param 'p' must be a finite number, got '" + std::string(bad) + "'"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.ReLU, inputs: [z]}\n")),
                      Contains("m.yaml:7:48: 'z' names no input and no node"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.ReLU, inputs: [x.result]}\n")),
                      Contains("names no input and no node"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: a, type: torch.nn.ReLU, inputs: [a.output]}\n  - {name: last, type: torch.nn.ReLU, inputs: [a.output]}\n")),
                      Contains("node 'a' reads its own output: a cycle"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: a, type: torch.nn.ReLU, inputs: [last.output]}\n  - {name: last, type: torch.nn.ReLU, inputs: [x]}\n")),
                      Contains("m.yaml:7:45: 'last.output' is the output of a node defined later (m.yaml:8:5)"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.ReLU, inputs: [x]}\n  - {name: last, type: torch.nn.ReLU, inputs: [x]}\n")),
                      Contains("m.yaml:8:5: duplicate name 'last' (first defined at m.yaml:7:5)"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: x, type: torch.nn.ReLU, inputs: [y]}\n")), Contains("duplicate name 'x'"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.ReLU, inputs: [x]}\n", "missing.output")),
                      Contains("'missing.output' names no input and no node"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.sum, params: {dim: 0}, inputs: [x]}\n")),
                      Contains("output 'task' is [20]: a multiclass task's output is [B, 20] (its logits)"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.nn.Linear, params: {in_features: 20, out_features: 999999999999}, inputs: [x]}\n")),
                      Contains("node 'last' (torch.nn.Linear): its output [B, 999999999999]") && Contains("exceed 2^31"));
    CHECK_THROWS_WITH(check(graph_text("  - {name: last, type: torch.reshape, params: {shape: [-1, 4, 5]}, inputs: [x]}\n"
                                       "  - {name: big, type: torch.nn.Linear, params: {in_features: 5, out_features: 3000000000}, inputs: [last.output]}\n")),
                      Contains("exceed 2^31"));
    const auto g = check(graph_text("  - {name: unused, type: torch.nn.ReLU, inputs: [x]}\n  - {name: last, type: torch.nn.ReLU, inputs: [x]}\n"));
    REQUIRE(g.warnings.size() == 1);
    CHECK_THAT(g.warnings[0], Contains("m.yaml:7:5: node 'unused' is computed but nothing reads it"));
}

TEST_CASE("Graph shape rules: every op, with the batch symbolic", "[graph]") {
    CHECK(shape_of("torch.nn.Linear", "in_features: 20, out_features: 7", "x") == "[B, 7]");
    CHECK(shape_of("torch.nn.Linear", "in_features: 64, out_features: 7", "y") == "[B, 3, 7]");
    CHECK(shape_of("torch.nn.GELU", "", "y") == "[B, 3, 64]");
    CHECK(shape_of("torch.nn.Dropout", "p: 0.1", "x") == "[B, 20]");
    CHECK(shape_of("torch.nn.BatchNorm1d", "num_features: 20", "x") == "[B, 20]");
    CHECK(shape_of("torch.nn.LayerNorm", "normalized_shape: 64", "y") == "[B, 3, 64]");
    CHECK(shape_of("torch.nn.LayerNorm", "normalized_shape: [3, 64]", "y") == "[B, 3, 64]");
    CHECK(shape_of("torch.nn.functional.softmax", "dim: -1", "y") == "[B, 3, 64]");
    CHECK(shape_of("torch.stack", "dim: 1", "x, x") == "[B, 2, 20]");
    CHECK(shape_of("torch.stack", "", "x, x, x") == "[3, B, 20]");
    CHECK(shape_of("torch.cat", "dim: 1", "x, x") == "[B, 40]");
    CHECK(shape_of("torch.unsqueeze", "dim: 1", "x") == "[B, 1, 20]");
    CHECK(shape_of("torch.squeeze", "dim: 1", "x") == "[B, 20]");
    CHECK(shape_of("torch.reshape", "shape: [-1, 4, 5]", "x") == "[B, 4, 5]");
    CHECK(shape_of("torch.transpose", "dim0: 1, dim1: 2", "y") == "[B, 64, 3]");
    CHECK(shape_of("torch.sum", "dim: 1", "y") == "[B, 64]");
    CHECK(shape_of("torch.mean", "dim: [1, 2], keepdim: true", "y") == "[B, 1, 1]");
    CHECK(shape_of("torch.add", "", "y, y") == "[B, 3, 64]");
    CHECK(shape_of("torch.mul", "other: 2.5", "x") == "[B, 20]");
    CHECK(shape_of("torch.einsum", "equation: 'bi,bj->bij'", "x, x") == "[B, 20, 20]");
    CHECK(shape_of("torch.einsum", "equation: 'be,bed->bd'", "g, y") == "[B, 64]");
    CHECK(shape_of("torch.matmul", "", "y, v") == "[B, 3, 1]");
    CHECK(shape_of("torch.bmm", "", "y, v") == "[B, 3, 1]");
}

TEST_CASE("Graph shape rules: a mismatch in every op kind is an error naming the shapes", "[graph][errors]") {
    auto fails = [](const std::string& type, const std::string& params, const std::string& inputs) {
        try {
            shape_of(type, params, inputs);
        } catch (const moe::config_error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK_THAT(fails("torch.nn.Linear", "in_features: 16, out_features: 4", "x"), Contains("its input [B, 20] must end in in_features = 16"));
    CHECK_THAT(fails("torch.nn.BatchNorm1d", "num_features: 16", "x"), Contains("expects [B, 16] or [B, 16, L], got [B, 20]"));
    CHECK_THAT(fails("torch.nn.LayerNorm", "normalized_shape: 20", "y"), Contains("normalized_shape [20] is not the end of its input's shape [B, 3, 64]"));
    CHECK_THAT(fails("torch.nn.functional.softmax", "dim: 0", "x"), Contains("the batch dimension of [B, 20]: it would mix the samples"));
    CHECK_THAT(fails("torch.nn.functional.softmax", "dim: 2", "x"), Contains("param 'dim' = 2 is out of range for a tensor of rank 2"));
    CHECK_THAT(fails("torch.stack", "dim: 1", "x, g"), Contains("stacks equal shapes, but input 1 is [B, 3] and input 0 [B, 20]"));
    CHECK_THAT(fails("torch.cat", "dim: 1", "x, y"), Contains("shapes equal elsewhere, but input 1 is [B, 3, 64]"));
    CHECK_THAT(fails("torch.cat", "dim: 0", "x, x"), Contains("concatenates along dim 0, the batch dimension of [B, 20]"));
    CHECK_THAT(fails("torch.matmul", "", "x, x"), Contains("[B, 20] (20) with the second-to-last dimension of its second [B, 20] (B)"));
    CHECK_THAT(fails("torch.matmul", "", "y, y"), Contains("[B, 3, 64] (64) with the second-to-last dimension of its second [B, 3, 64] (3): 64 != 3"));
    CHECK_THAT(fails("torch.bmm", "", "x, y"), Contains("multiplies two 3-D tensors, got [B, 20] and [B, 3, 64]"));
    CHECK_THAT(fails("torch.bmm", "", "y, y"), Contains("contracts dimension 2 of [B, 3, 64] (64) with dimension 1 of [B, 3, 64] (3)"));
    CHECK_THAT(fails("torch.einsum", "equation: 'be,bed->bd'", "x, y"), Contains("letter 'e' is 20 in one place and 3 in operand 1 [B, 3, 64]"));
    CHECK_THAT(fails("torch.einsum", "equation: 'be,bed'", "g, y"), Contains("must have two operands and an explicit output"));
    CHECK_THAT(fails("torch.einsum", "equation: 'be,bed->bz'", "g, y"), Contains("output letter 'z' is in no operand"));
    CHECK_THAT(fails("torch.squeeze", "dim: 0", "x"), Contains("squeezes dim 0, the batch dimension of [B, 20]"));
    CHECK_THAT(fails("torch.reshape", "shape: [-1, 3]", "x"), Contains("keep the batch as a dimension of its own"));
    CHECK_THAT(fails("torch.transpose", "dim0: 0, dim1: 3", "y"), Contains("param 'dim1' = 3 is out of range for a tensor of rank 3"));
    CHECK_THAT(fails("torch.sum", "dim: [1, -2]", "y"), Contains("dim -2 is listed twice"));
    CHECK_THAT(fails("torch.add", "", "x, y"), Contains("the shapes [B, 20] and [B, 3, 64] do not broadcast"));
    CHECK_THAT(fails("torch.unsqueeze", "dim: 5", "x"), Contains("param 'dim' = 5 is out of range for a tensor of rank 3"));
}
