#pragma once
// Checks a GraphSpec before any data: names, references, order, node types and params, and every
// node's shape with the symbolic batch dimension. The first problem found is a config_error naming
// the file, line and column; nodes whose output nothing reads are warnings.
//
// Nodes run in file order: a node may read the graph's inputs and the outputs of nodes above it. A
// reference to itself is a cycle; to a node below, an error naming both lines (the order is the
// plan, so a forward reference would need a reordering the file does not show).
#include <map>
#include <set>
#include <string>
#include <vector>

#include "moe/graph/graph_spec.hpp"
#include "moe/graph/op_registry.hpp"

namespace moe::graph {

/// What the check found out about one node.
struct NodeInfo {
    std::string name, type;
    std::vector<std::size_t> inputs;  ///< value ids of its inputs (see CheckedGraph::values)
    Shape out;
    double params = 0, flops_per_sample = 0;
};

/// A checked graph: values are the graph's inputs (ids 0 .. inputs - 1) then one per node.
struct CheckedGraph {
    GraphSpec spec;
    std::vector<Shape> values;
    std::vector<NodeInfo> nodes;
    std::vector<std::size_t> outputs;  ///< value id of each output, in spec.outputs order
    std::vector<std::string> warnings;
    double params() const {
        double n = 0;
        for (const auto& node : nodes) n += node.params;
        return n;
    }
    double flops_per_sample() const {
        double n = 0;
        for (const auto& node : nodes) n += node.flops_per_sample;
        return n;
    }
};

/// Checks the graph; throws config_error at the first problem.
inline CheckedGraph check_graph(GraphSpec spec) {
    CheckedGraph g;
    std::map<std::string, std::size_t> input_id;
    std::map<std::string, std::size_t> node_index;  // every node, for "defined later" messages
    std::map<std::string, Position> defined;
    for (const auto& in : spec.inputs) {
        if (!(in.shape.per_sample() <= kMaxElements))
            throw graph_error(in.where, moe::detail::concat("input '", in.name, "' ", to_string(in.shape),
                                                            " has more than 2^31 elements per sample"));
        if (in.shape.rank() > kMaxRank)
            throw graph_error(in.where, moe::detail::concat("input '", in.name, "' ", to_string(in.shape),
                                                            " has more than ", kMaxRank, " dimensions"));
        input_id[in.name] = g.values.size();
        g.values.push_back(in.shape);
        defined[in.name] = in.where;
    }
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
        const NodeSpec& n = spec.nodes[i];
        if (n.name.empty() || n.name.find('.') != std::string::npos)
            throw graph_error(n.where, "node name '" + n.name + "' must be non-empty and without '.'");
        if (auto it = defined.find(n.name); it != defined.end())
            throw graph_error(n.where, "duplicate name '" + n.name + "' (first defined at " + it->second.str() + ")");
        defined[n.name] = n.where;
        node_index[n.name] = i;
    }
    std::vector<bool> read(spec.nodes.size(), false);
    // A reference's value id; `reader` is the node reading it (spec.nodes.size() for an output).
    auto resolve = [&](const Reference& r, std::size_t reader) -> std::size_t {
        if (auto it = input_id.find(r.text); it != input_id.end()) return it->second;
        const auto dot = r.text.rfind('.');
        const std::string node = dot == std::string::npos ? r.text : r.text.substr(0, dot);
        const std::string port = dot == std::string::npos ? "" : r.text.substr(dot + 1);
        auto it = node_index.find(node);
        if (it == node_index.end())
            throw graph_error(
                r.where,
                "'" + r.text +
                    "' names no input and no node (inputs are read by their name, node results as '<node>.output')");
        if (port != "output") throw graph_error(r.where, "'" + r.text + "': a node's result is '" + node + ".output'");
        if (it->second == reader) throw graph_error(r.where, "node '" + node + "' reads its own output: a cycle");
        if (it->second > reader)
            throw graph_error(r.where, moe::detail::concat("'", r.text, "' is the output of a node defined later (",
                                                           spec.nodes[it->second].where.str(),
                                                           "): nodes run in file order, move it above its readers"));
        read[it->second] = true;
        return spec.inputs.size() + it->second;
    };
    const auto& registry = op_registry();
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
        const NodeSpec& n = spec.nodes[i];
        const auto op = registry.find(n.type);
        if (op == registry.end()) {
            std::string known;
            for (const auto& [type, rule] : registry) known += (known.empty() ? "" : ", ") + type;
            throw graph_error(n.where, "node '" + n.name + "': unknown type '" + n.type + "' (known: " + known + ")");
        }
        NodeInfo info;
        info.name = n.name;
        info.type = n.type;
        std::vector<Shape> shapes;
        for (const auto& r : n.inputs) {
            info.inputs.push_back(resolve(r, i));
            shapes.push_back(g.values[info.inputs.back()]);
        }
        const OpShape s = op->second.shape(OpContext(n, std::move(shapes)));
        // Sizes a computer holds: a value of a sample, or a node's parameters, beyond 2^31 elements is
        // a typo (and would overflow the arithmetic of buffers sized from it).
        if (!(s.out.per_sample() <= kMaxElements) || !(s.params <= kMaxElements))
            throw graph_error(
                n.where, moe::detail::concat("node '", n.name, "' (", n.type, "): its output ", to_string(s.out), " (",
                                             s.out.per_sample(), " elements per sample) or its ", s.params,
                                             " parameters exceed 2^31"));
        if (s.out.rank() > kMaxRank)
            throw graph_error(n.where,
                              moe::detail::concat("node '", n.name, "' (", n.type, "): its output ", to_string(s.out),
                                                  " has more than ", kMaxRank, " dimensions"));
        info.out = s.out;
        info.params = s.params;
        info.flops_per_sample = s.flops_per_sample;
        g.values.push_back(s.out);
        g.nodes.push_back(std::move(info));
    }
    std::set<std::string> output_names;
    for (const auto& o : spec.outputs) {
        if (!output_names.insert(o.name).second)
            throw graph_error(o.ref.where, "output '" + o.name + "' is named twice");
        const std::size_t id = resolve(o.ref, spec.nodes.size());
        const Shape& s = g.values[id];
        const Index want = o.task.outputs();
        const bool matrix = s.rank() == 2 && s[0] == kBatch && s[1] == want,
                   vector = s.rank() == 1 && s[0] == kBatch && want == 1;
        if (!matrix && !vector)
            throw graph_error(o.ref.where,
                              moe::detail::concat("output '", o.name, "' is ", to_string(s), ": a ",
                                                  to_string(o.task.kind), " task's output is [B, ", want, "]",
                                                  o.task.kind == TaskKind::multiclass ? " (its logits)" : ""));
        g.outputs.push_back(id);
    }
    for (std::size_t i = 0; i < spec.nodes.size(); ++i)
        if (!read[i])
            g.warnings.push_back(spec.nodes[i].where.str() + ": node '" + spec.nodes[i].name +
                                 "' is computed but nothing reads it");
    g.spec = std::move(spec);
    return g;
}

}  // namespace moe::graph
