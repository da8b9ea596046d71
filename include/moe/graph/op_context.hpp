#pragma once
// What an op's shape rule sees: its node (params as written, inputs), the shapes of its inputs, and
// helpers that read typed params and throw errors naming the file, line, node and type.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "moe/graph/graph_spec.hpp"

namespace moe::graph {

/// The result of an op's shape rule: its output shape, its parameter count, and its multiply-adds
/// x 2 per batch sample (FLOPs; elementwise ops count one per element).
struct OpShape {
    Shape out;
    double params = 0;
    double flops_per_sample = 0;
};

class OpContext {
public:
    OpContext(const NodeSpec& node, std::vector<Shape> inputs) : node_(node), in_(std::move(inputs)) {}

    const NodeSpec& node() const { return node_; }
    const std::vector<Shape>& inputs() const { return in_; }
    const Shape& input(std::size_t i) const { return in_.at(i); }

    /// config_error "file:line:col: node 'name' (type): message".
    config_error error(const std::string& message) const {
        return graph_error(node_.where, "node '" + node_.name + "' (" + node_.type + "): " + message);
    }
    /// Refuses params not in `known`, naming the first unknown one and the known ones.
    void allow_params(const std::set<std::string>& known) const {
        for (const auto& [key, value] : node_.params)
            if (!known.count(key)) {
                std::string list;
                for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
                throw graph_error(
                    value.where,
                    moe::detail::concat("node '", node_.name, "' (", node_.type, "): unknown param '", key, "' (",
                                        known.empty() ? std::string("it takes none") : "expected " + list, ")"));
            }
    }
    /// Refuses a number of inputs outside [least, most].
    void expect_inputs(std::size_t least, std::size_t most) const {
        if (in_.size() < least || in_.size() > most)
            throw error(
                least == most
                    ? moe::detail::concat("takes ", least, " input", least == 1 ? "" : "s", ", got ", in_.size())
                    : moe::detail::concat("takes ", least, " to ", most, " inputs, got ", in_.size()));
    }

    bool has(const std::string& key) const { return node_.params.count(key) > 0; }
    Index int_param(const std::string& key) const {
        const ParamValue& v = scalar(key);
        return to_int(v, key, v.text);
    }
    Index int_param(const std::string& key, Index fallback) const { return has(key) ? int_param(key) : fallback; }
    double number_param(const std::string& key, double fallback) const {
        if (!has(key)) return fallback;
        const ParamValue& v = scalar(key);
        try {
            std::size_t used = 0;
            const double d = std::stod(v.text, &used);
            if (used == v.text.size() && std::isfinite(d)) return d;
        } catch (const std::exception&) {
        }
        throw param_error(v, key, "a finite number", "'" + v.text + "'");
    }
    bool bool_param(const std::string& key, bool fallback) const {
        if (!has(key)) return fallback;
        const ParamValue& v = scalar(key);
        if (v.text == "true" || v.text == "True") return true;
        if (v.text == "false" || v.text == "False") return false;
        throw param_error(v, key, "true or false", v.text);
    }
    std::string string_param(const std::string& key) const { return scalar(key).text; }
    /// A list of integers, or one integer as a list of one.
    std::vector<Index> int_list_param(const std::string& key) const {
        const ParamValue& v = required(key);
        if (v.kind == ParamValue::Kind::scalar) return {to_int(v, key, v.text)};
        if (v.kind != ParamValue::Kind::list) throw param_error(v, key, "an integer or a list of integers", "nothing");
        std::vector<Index> out;
        for (const auto& item : v.items) out.push_back(to_int(v, key, item));
        return out;
    }

    /// A dimension index of a rank-r tensor (negative counts from the end, as PyTorch's), checked.
    Index dim_index(Index dim, Index rank, const std::string& key = "dim") const {
        if (dim < -rank || dim >= rank)
            throw error(moe::detail::concat("param '", key, "' = ", dim, " is out of range for a tensor of rank ", rank,
                                            " (expected ", -rank, " .. ", rank - 1, ")"));
        return dim < 0 ? dim + rank : dim;
    }

private:
    const ParamValue& required(const std::string& key) const {
        auto it = node_.params.find(key);
        if (it == node_.params.end()) throw error("missing param '" + key + "'");
        return it->second;
    }
    const ParamValue& scalar(const std::string& key) const {
        const ParamValue& v = required(key);
        if (v.kind != ParamValue::Kind::scalar)
            throw param_error(v, key, "a scalar", v.kind == ParamValue::Kind::list ? "a list" : "nothing");
        return v;
    }
    Index to_int(const ParamValue& v, const std::string& key, const std::string& text) const {
        try {
            std::size_t used = 0;
            const long long i = std::stoll(text, &used);
            if (used == text.size()) return Index(i);
        } catch (const std::exception&) {
        }
        throw param_error(v, key, "an integer", "'" + text + "'");
    }
    config_error param_error(const ParamValue& v, const std::string& key, const std::string& want,
                             const std::string& got) const {
        return graph_error(v.where, moe::detail::concat("node '", node_.name, "' (", node_.type, "): param '", key,
                                                        "' must be ", want, ", got ", got));
    }

    const NodeSpec& node_;
    std::vector<Shape> in_;
};

/// Two dimensions that must be equal: B equals only B.
inline bool same_dim(Index a, Index b) { return a == b; }

/// PyTorch's broadcasting of two shapes (aligned at the end, 1 stretches); empty optional-like
/// result through `ok` when they do not broadcast.
inline Shape broadcast(const Shape& a, const Shape& b, bool& ok) {
    const Index r = std::max(a.rank(), b.rank());
    Shape out;
    out.dims.resize(std::size_t(r));
    ok = true;
    for (Index i = 0; i < r; ++i) {
        const Index da = i < r - a.rank() ? 1 : a[i - (r - a.rank())];
        const Index db = i < r - b.rank() ? 1 : b[i - (r - b.rank())];
        if (da == db || db == 1)
            out.dims[std::size_t(i)] = da;
        else if (da == 1)
            out.dims[std::size_t(i)] = db;
        else
            ok = false;
    }
    return out;
}

}  // namespace moe::graph
