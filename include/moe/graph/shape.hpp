#pragma once
// Tensor shapes of a model graph with a symbolic batch dimension.
//
// A dimension is a size >= 0 or kBatch, the batch size B that is only known when data arrives. Shape
// rules work on these symbols: B matches B, B never matches a number (it would hold for one batch
// size only, the kind of bug the checks are for), and PyTorch's broadcasting lets 1 stretch to B.
#include <string>
#include <vector>

#include "moe/core/types.hpp"

namespace moe::graph {

/// The batch dimension: "null" in a YAML shape, "B" in messages.
constexpr Index kBatch = -1;
/// The most dimensions a tensor of a graph may have (run-time shapes are held in place: no allocation).
constexpr Index kMaxRank = 8;
/// The most elements a sample's value, or a node's parameters, may have (2^31).
constexpr double kMaxElements = 2147483648.0;

/// A tensor's dimensions, outermost first (PyTorch's order: [B, 20] is a batch of 20 features).
struct Shape {
    std::vector<Index> dims;

    Index rank() const { return Index(dims.size()); }
    Index operator[](Index i) const { return dims[std::size_t(i)]; }
    bool operator==(const Shape& o) const { return dims == o.dims; }
    bool operator!=(const Shape& o) const { return dims != o.dims; }
    /// Elements per batch sample: the product of every dimension but B (each B counts once).
    double per_sample() const {
        double n = 1;
        for (Index d : dims)
            if (d != kBatch) n *= double(d);
        return n;
    }
};

inline std::string dim_string(Index d) { return d == kBatch ? "B" : std::to_string(d); }

/// "[B, 3, 64]".
inline std::string to_string(const Shape& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.dims.size(); ++i) out += (i ? ", " : "") + dim_string(s.dims[i]);
    return out + "]";
}

}  // namespace moe::graph
