#pragma once
// Model files of graph models: moe::save and moe::load<GraphModel<T>> as for every model, with the
// YAML text in the file's config ({"yaml": ..., "file": ...}), so a file is self-describing: the
// loader rebuilds the graph from it, checks it, and reads the tensors by their PyTorch names.
#include <nlohmann/json.hpp>

#include "moe/graph/graph_model.hpp"
#include "moe/io/model_file.hpp"

namespace moe::graph {

/// The config of a model file (found by the model-file code through argument-dependent lookup).
inline nlohmann::json spec_to_json(const GraphModelSpec& s) {
    return nlohmann::json{{"yaml", s.yaml}, {"file", s.file}};
}

inline void spec_from_json(const nlohmann::json& j, GraphModelSpec& s) {
    if (!j.is_object() || !j.contains("yaml") || !j["yaml"].is_string())
        throw config_error("config: a graph model's config holds its YAML text as the string \"yaml\"");
    for (const auto& [key, value] : j.items())
        if (key != "yaml" && key != "file")
            throw config_error("config: unknown key '" + key + "' (a graph model has yaml and file)");
    s.yaml = j["yaml"].get<std::string>();
    s.file = j.contains("file") && j["file"].is_string() ? j["file"].get<std::string>() : "model.yaml";
}

/// Values the model of a spec holds: its parameters and each BatchNorm's running statistics. A
/// YAML that does not check counts as nothing (the loader then reports the check's error).
inline double model_values(const GraphModelSpec& s) {
    try {
        const CheckedGraph g = check_graph(parse_graph_yaml(s.yaml, s.file));
        double n = g.params();
        for (const auto& node : g.nodes)
            if (node.type == ops::BatchNorm1d::type) n += node.params + 1;  // running mean and variance, the counter
        return n;
    } catch (const config_error&) {
        return 0;
    }
}

}  // namespace moe::graph

namespace moe::detail {
template <class T>
struct model_kind<graph::GraphModel<T>> {
    static constexpr const char* value = "graph";
};
}  // namespace moe::detail
