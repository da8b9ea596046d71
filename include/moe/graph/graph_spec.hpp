#pragma once
// A model graph as written in YAML, before any checking of shapes: inputs, nodes in file order,
// outputs, each with where it was written (file, line, column) for the error messages.
#include <map>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/graph/shape.hpp"
#include "moe/models/task.hpp"

namespace moe::graph {

/// Where something was written: file, line and column (1-based).
struct Position {
    std::string file;
    int line = 0, column = 0;
    std::string str() const { return detail::concat(file, ":", line, ":", column); }
};

/// A parameter's value as written: a scalar (its text), a list of scalars, or null; typed reads
/// throw config_error naming the position, the node and the parameter.
struct ParamValue {
    enum class Kind { null, scalar, list } kind = Kind::null;
    std::string text;                ///< the scalar's text
    std::vector<std::string> items;  ///< the list's scalars
    Position where;
};

/// One input of a node: an input of the graph ("features") or another node's output ("expert_1.output").
struct Reference {
    std::string text;      ///< as written
    std::string argument;  ///< the argument it feeds when inputs are a map ("input", "other"); empty in a list
    Position where;
};

/// One node of the graph.
struct NodeSpec {
    std::string name, type;
    std::map<std::string, ParamValue> params;
    std::vector<Reference> inputs;
    Position where;
};

/// One input block: a named tensor of the data.
struct InputSpec {
    std::string name;
    std::string dtype = "float32";
    Shape shape;
    std::vector<std::string> columns;  ///< the data file's columns that fill it, in order (may be empty)
    Position where;
};

/// One output: a name, the node output it is, and the task it is the head of (binary unless the
/// YAML says `task: regression` or `task: multiclass` with `classes`).
struct OutputSpec {
    std::string name;
    Reference ref;
    TaskSpec task;
};

/// The whole graph as written.
struct GraphSpec {
    std::string file;  ///< the name errors use
    std::vector<InputSpec> inputs;
    std::vector<NodeSpec> nodes;
    std::vector<OutputSpec> outputs;
};

/// A config_error "file:line:col: message".
inline config_error graph_error(const Position& at, const std::string& message) {
    return config_error(at.str() + ": " + message);
}

}  // namespace moe::graph
