#pragma once
// The params the library's block nodes (moe.MLP, moe.MMoE, moe.PLE) share, read once here: the
// activation by name, a dropout probability, a list of positive widths; and the [B, features] input
// of the mixtures.
#include <string>
#include <vector>

#include "moe/graph/op_context.hpp"
#include "moe/layers/activations.hpp"

namespace moe::graph::ops {

/// The activation param (relu, gelu, sigmoid, tanh, identity), relu when absent.
inline ActivationKind activation_param(const OpContext& c) {
    if (!c.has("activation")) return ActivationKind::relu;
    try {
        return activation_from_string(c.string_param("activation"));
    } catch (const config_error& e) {
        throw c.error(e.what());
    }
}

/// A dropout probability param in [0, 1), 0 when absent.
inline double dropout_param(const OpContext& c, const std::string& key) {
    const double p = c.number_param(key, 0.0);
    if (!(p >= 0 && p < 1)) throw c.error(moe::detail::concat(key, " must be in [0, 1), got ", p));
    return p;
}

/// A list of positive widths (hidden layers), empty when absent.
inline std::vector<Index> widths_param(const OpContext& c, const std::string& key) {
    const std::vector<Index> w = c.has(key) ? c.int_list_param(key) : std::vector<Index>{};
    for (Index v : w)
        if (v <= 0) throw c.error(moe::detail::concat(key, " must be positive, got ", v));
    return w;
}

/// The features of the node's one input, which must be [B, features] (moe.MMoE, moe.PLE).
inline Index features_input(const OpContext& c) {
    const Shape& x = c.input(0);
    if (x.rank() != 2 || x[0] != kBatch || x[1] <= 0) throw c.error("expects an input [B, features], got " + to_string(x));
    return x[1];
}

}  // namespace moe::graph::ops
