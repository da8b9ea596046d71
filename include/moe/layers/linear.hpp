#pragma once
#include <string>

#include "moe/layers/grouped_linear.hpp"

namespace moe {

/// Fully connected layer y = W x + b, as torch.nn.Linear (a GroupedLinear with one group).
/// Shapes: x is in x B, y is out x B; weight is out x in (PyTorch's layout), bias is out x 1.
/// Parameters: `weight`, `bias`. Init: U(-1/sqrt(in), 1/sqrt(in)) for both, PyTorch's default.
template <class T>
class Linear : public GroupedLinear<T> {
public:
    Linear(Index in_features, Index out_features, std::string name = "moe::Linear")
        : GroupedLinear<T>(1, in_features, out_features, true, std::move(name)) {}
};

}  // namespace moe
