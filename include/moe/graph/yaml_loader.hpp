#pragma once
// Reads a model graph from YAML (yaml-cpp; the moe::graph target) into a GraphSpec. Strict: every
// key is checked, unknown keys and wrong kinds of values are refused, and every error names the
// file, line and column. Shapes and references are checked later (graph/graph_check.hpp).
//
//   inputs:                      # one entry per input tensor
//     features: {dtype: float32, shape: [null, 20], columns: [f0, f1, ...]}
//   graph:                       # nodes in the order they run
//     - name: expert_1
//       type: torch.nn.Linear
//       params: {in_features: 20, out_features: 64}
//       inputs: {input: features}          # or a list: [features]
//   outputs:                     # task name: node output (a binary task: [B, 1] logits)
//     click: tower_1.output
//     watch: {output: tower_2.output, task: regression}   # or multiclass with classes: C
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "moe/graph/graph_spec.hpp"

namespace moe::graph {

namespace detail {

inline Position position(const std::string& file, const YAML::Mark& m) { return {file, m.line + 1, m.column + 1}; }

inline const char* kind_name(const YAML::Node& n) {
    switch (n.Type()) {
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return "a scalar";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a map";
        default:
            return "an undefined value";
    }
}

inline YAML::Node expect(const YAML::Node& n, YAML::NodeType::value type, const std::string& file,
                         const std::string& what);

/// The keys of the map `n` in order: each a scalar, none twice (YAML parsers differ on which of two
/// equal keys wins; here it is an error at the second one).
inline std::vector<std::pair<std::string, YAML::Node>> map_items(const YAML::Node& n, const std::string& file,
                                                                 const std::string& what) {
    std::vector<std::pair<std::string, YAML::Node>> items;
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
        const std::string key = expect(it->first, YAML::NodeType::Scalar, file, what + ": a key").Scalar();
        if (!seen.insert(key).second)
            throw graph_error(position(file, it->first.Mark()), what + ": key '" + key + "' appears twice");
        items.emplace_back(key, it->second);
    }
    return items;
}

/// Refuses keys of the map `n` that are not in `known`, naming them and the known ones (and keys
/// that are not scalars or appear twice).
inline void check_keys(const YAML::Node& n, const std::string& file, const std::string& what,
                       const std::set<std::string>& known) {
    map_items(n, file, what);
    for (auto it = n.begin(); it != n.end(); ++it) {
        const std::string key = it->first.Scalar();
        if (!known.count(key)) {
            std::string list;
            for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
            throw graph_error(position(file, it->first.Mark()),
                              moe::detail::concat(what, ": unknown key '", key, "' (expected ", list, ")"));
        }
    }
}

inline YAML::Node expect(const YAML::Node& n, YAML::NodeType::value type, const std::string& file,
                         const std::string& what) {
    if (n.Type() != type) {
        const char* want = type == YAML::NodeType::Map        ? "a map"
                           : type == YAML::NodeType::Sequence ? "a list"
                                                              : "a scalar";
        throw graph_error(position(file, n.Mark()),
                          moe::detail::concat(what, " must be ", want, ", got ", kind_name(n)));
    }
    return n;
}

inline std::string scalar(const YAML::Node& n, const std::string& file, const std::string& what) {
    return expect(n, YAML::NodeType::Scalar, file, what).Scalar();
}

inline Reference reference(const YAML::Node& n, const std::string& file, const std::string& what,
                           std::string argument = "") {
    return {scalar(n, file, what), std::move(argument), position(file, n.Mark())};
}

inline ParamValue param_value(const YAML::Node& n, const std::string& file, const std::string& what) {
    ParamValue v;
    v.where = position(file, n.Mark());
    if (n.IsNull()) return v;
    if (n.IsScalar()) {
        v.kind = ParamValue::Kind::scalar;
        v.text = n.Scalar();
        return v;
    }
    if (n.IsSequence()) {
        v.kind = ParamValue::Kind::list;
        for (const auto& item : n) v.items.push_back(scalar(item, file, what + " (an item of the list)"));
        return v;
    }
    throw graph_error(v.where, what + " must be a scalar or a list of scalars, got a map");
}

inline Index dimension(const YAML::Node& n, const std::string& file, const std::string& what) {
    if (n.IsNull() || (n.IsScalar() && (n.Scalar() == "null" || n.Scalar() == "~"))) return kBatch;
    const std::string text = scalar(n, file, what);
    try {
        std::size_t used = 0;
        const long long v = std::stoll(text, &used);
        if (used == text.size() && v > 0) return Index(v);
    } catch (const std::exception&) {
    }
    throw graph_error(position(file, n.Mark()),
                      what + ": expected a positive size or null (the batch), got '" + text + "'");
}

}  // namespace detail

/// Parses YAML text; `file` names it in errors. Throws config_error "file:line:col: ...".
inline GraphSpec parse_graph_yaml(const std::string& text, const std::string& file = "<yaml>") {
    using detail::check_keys;
    using detail::expect;
    using detail::position;
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
        throw graph_error(position(file, e.mark), "YAML syntax error: " + e.msg);
    }
    GraphSpec g;
    g.file = file;
    if (!root.IsMap())
        throw graph_error({file, 1, 1}, std::string("the file must be a map with inputs, graph and outputs, got ") +
                                            detail::kind_name(root));
    check_keys(root, file, "the file", {"inputs", "graph", "outputs"});
    for (const char* key : {"inputs", "graph", "outputs"})
        if (!root[key]) throw graph_error({file, 1, 1}, moe::detail::concat("the file has no '", key, "' block"));

    const YAML::Node inputs = expect(root["inputs"], YAML::NodeType::Map, file, "inputs");
    detail::map_items(inputs, file, "inputs");
    for (auto it = inputs.begin(); it != inputs.end(); ++it) {
        InputSpec in;
        in.name = it->first.Scalar();
        in.where = position(file, it->first.Mark());
        const std::string what = "input '" + in.name + "'";
        const YAML::Node body = expect(it->second, YAML::NodeType::Map, file, what);
        check_keys(body, file, what, {"dtype", "shape", "columns"});
        if (body["dtype"]) {
            in.dtype = detail::scalar(body["dtype"], file, what + ".dtype");
            if (in.dtype != "float32" && in.dtype != "float64")
                throw graph_error(position(file, body["dtype"].Mark()),
                                  what + ".dtype: expected float32 or float64, got '" + in.dtype + "'");
        }
        if (!body["shape"]) throw graph_error(in.where, what + " has no shape (e.g. shape: [null, 20])");
        for (const auto& d : expect(body["shape"], YAML::NodeType::Sequence, file, what + ".shape")) {
            in.shape.dims.push_back(detail::dimension(d, file, what + ".shape"));
            if (in.shape.dims.size() > 1 && in.shape.dims.back() == kBatch)
                throw graph_error(position(file, d.Mark()),
                                  what + ".shape: only the first dimension is the batch (null)");
        }
        if (in.shape.dims.empty() || in.shape.dims.front() != kBatch)
            throw graph_error(position(file, body["shape"].Mark()),
                              what + ".shape must start with null, the batch dimension, got " + to_string(in.shape));
        if (body["columns"]) {
            for (const auto& c : expect(body["columns"], YAML::NodeType::Sequence, file, what + ".columns"))
                in.columns.push_back(detail::scalar(c, file, what + ".columns"));
            if (Index(in.columns.size()) != Index(in.shape.per_sample()))
                throw graph_error(position(file, body["columns"].Mark()),
                                  moe::detail::concat(what, " has ", in.columns.size(), " columns for the shape ",
                                                      to_string(in.shape)));
        }
        g.inputs.push_back(std::move(in));
    }

    const YAML::Node nodes = expect(root["graph"], YAML::NodeType::Sequence, file, "graph");
    for (const auto& n : nodes) {
        NodeSpec node;
        node.where = position(file, n.Mark());
        expect(n, YAML::NodeType::Map, file, "a node of the graph");
        check_keys(n, file, "a node", {"name", "type", "params", "inputs"});
        if (!n["name"]) throw graph_error(node.where, "a node has no name");
        node.name = detail::scalar(n["name"], file, "name");
        const std::string what = "node '" + node.name + "'";
        if (!n["type"]) throw graph_error(node.where, what + " has no type");
        node.type = detail::scalar(n["type"], file, what + ".type");
        if (n["params"] && !n["params"].IsNull()) {
            const YAML::Node params = expect(n["params"], YAML::NodeType::Map, file, what + ".params");
            for (const auto& [key, value] : detail::map_items(params, file, what + ".params"))
                node.params[key] = detail::param_value(value, file, what + " param '" + key + "'");
        }
        if (!n["inputs"]) throw graph_error(node.where, what + " has no inputs");
        const YAML::Node ins = n["inputs"];
        if (ins.IsSequence()) {
            for (const auto& r : ins) node.inputs.push_back(detail::reference(r, file, what + " input"));
        } else if (ins.IsMap()) {
            for (const auto& [arg, value] : detail::map_items(ins, file, what + ".inputs")) {
                if (value.IsSequence()) {  // {tensors: [a.output, b.output]}
                    for (const auto& r : value)
                        node.inputs.push_back(detail::reference(r, file, what + " input '" + arg + "'", arg));
                } else {
                    node.inputs.push_back(detail::reference(value, file, what + " input '" + arg + "'", arg));
                }
            }
        } else {
            node.inputs.push_back(detail::reference(ins, file, what + " inputs"));
        }
        g.nodes.push_back(std::move(node));
    }

    const YAML::Node outputs = expect(root["outputs"], YAML::NodeType::Map, file, "outputs");
    for (const auto& [name, value] : detail::map_items(outputs, file, "outputs")) {
        OutputSpec o;
        o.name = name;
        const std::string what = "output '" + o.name + "'";
        o.task.name = name;
        if (value.IsMap()) {
            check_keys(value, file, what, {"output", "task", "classes", "relu"});
            if (!value["output"])
                throw graph_error(position(file, value.Mark()), what + " has no 'output' (the node output it is)");
            o.ref = detail::reference(value["output"], file, what);
            if (value["task"]) {
                const std::string kind = detail::scalar(value["task"], file, what + ".task");
                if (kind == "binary")
                    o.task.kind = TaskKind::binary;
                else if (kind == "regression")
                    o.task.kind = TaskKind::regression;
                else if (kind == "multiclass")
                    o.task.kind = TaskKind::multiclass;
                else
                    throw graph_error(position(file, value["task"].Mark()),
                                      what + ".task: expected binary, regression or multiclass, got '" + kind + "'");
            }
            const YAML::Node body = value;  // a lambda may not capture a structured binding (C++17)
            auto number = [&](const char* key) -> Index {
                const std::string digits = detail::scalar(body[key], file, what + "." + key);
                try {
                    std::size_t used = 0;
                    const long long v = std::stoll(digits, &used);
                    if (used == digits.size()) return Index(v);
                } catch (const std::exception&) {
                }
                throw graph_error(position(file, body[key].Mark()),
                                  what + "." + key + ": expected an integer, got '" + digits + "'");
            };
            if (value["classes"]) {
                if (o.task.kind != TaskKind::multiclass)
                    throw graph_error(position(file, value["classes"].Mark()),
                                      what + ": classes belongs to a multiclass task");
                o.task.classes = number("classes");
                if (o.task.classes < 2)
                    throw graph_error(position(file, value["classes"].Mark()),
                                      moe::detail::concat(what, ".classes must be at least 2, got ", o.task.classes));
            } else if (o.task.kind == TaskKind::multiclass) {
                throw graph_error(position(file, value.Mark()), what + ": a multiclass task needs classes");
            }
            if (value["relu"]) {
                const std::string flag = detail::scalar(value["relu"], file, what + ".relu");
                if (o.task.kind != TaskKind::regression)
                    throw graph_error(position(file, value["relu"].Mark()),
                                      what + ": relu belongs to a regression task");
                if (flag != "true" && flag != "false")
                    throw graph_error(position(file, value["relu"].Mark()),
                                      what + ".relu: expected true or false, got '" + flag + "'");
                o.task.relu_output = flag == "true";
            }
        } else {
            o.ref = detail::reference(value, file, what);
        }
        g.outputs.push_back(std::move(o));
    }
    if (g.outputs.empty())
        throw graph_error(position(file, outputs.Mark()), "outputs is empty: name at least one task's prediction");
    return g;
}

/// Reads and parses a YAML file (io_error naming it when it cannot be read).
inline GraphSpec load_graph_yaml(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw io_error(path + ": cannot open the model graph");
    std::stringstream text;
    text << f.rdbuf();
    return parse_graph_yaml(text.str(), path);
}

}  // namespace moe::graph
