// moe-graph: model graphs written in YAML, from the command line (CLI11).
//
//   moe-graph check model.yaml   every node's output shape, parameters and FLOPs per sample, the
//                                totals, and warnings (nodes nothing reads); exit 1 with the error
//                                (file:line:col, node, shapes) when the graph is wrong.
//
// Training, prediction and export of graph models are not built yet (README, "Model graphs").
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <moe/graph/graph_check.hpp>
#include <moe/graph/yaml_loader.hpp>

namespace {

int check(const std::string& path) {
    using namespace moe::graph;
    const CheckedGraph g = check_graph(load_graph_yaml(path));
    std::printf("%-24s %-30s %-16s %12s %14s\n", "node", "type", "output", "params", "FLOPs/sample");
    for (const auto& in : g.spec.inputs) std::printf("%-24s %-30s %-16s %12s %14s\n", in.name.c_str(), "input", to_string(in.shape).c_str(), "", "");
    for (const auto& n : g.nodes)
        std::printf("%-24s %-30s %-16s %12.0f %14.0f\n", n.name.c_str(), n.type.c_str(), to_string(n.out).c_str(), n.params, n.flops_per_sample);
    std::string outputs;
    for (std::size_t i = 0; i < g.outputs.size(); ++i)
        outputs += (i ? ", " : "") + g.spec.outputs[i].name + " " + to_string(g.values[g.outputs[i]]);
    std::printf("\n%s: %zu nodes, outputs %s; %.0f parameters, %.0f FLOPs per sample\n", path.c_str(), g.nodes.size(), outputs.c_str(),
                g.params(), g.flops_per_sample());
    for (const auto& w : g.warnings) std::printf("warning: %s\n", w.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"moe-graph: model graphs of torch ops written in YAML"};
    app.require_subcommand(1);
    std::string path;
    CLI::App* check_cmd = app.add_subcommand("check", "check a graph: every node's shape, parameters and FLOPs per sample");
    check_cmd->add_option("model", path, "the model's YAML file")->required();
    CLI11_PARSE(app, argc, argv);
    try {
        if (*check_cmd) return check(path);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe-graph: %s\n", e.what());
        return 1;
    }
    return 2;
}
