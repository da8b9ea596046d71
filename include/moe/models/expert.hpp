#pragma once
// Experts, alone and as a bank evaluated together.
#include <string>

#include "moe/layers/mlp.hpp"

namespace moe {

/// One expert network: an MLP from a spec (the usual Linear-ReLU-BatchNorm-Linear-ReLU expert is
/// MLPSpec{{in, h, out}, relu, batchnorm = true, dropout = 0, output_activation = true}).
/// Shapes: x is in x B, y is out x B.
template <class T>
class Expert : public MLP<T> {
public:
    explicit Expert(const MLPSpec& spec, std::string name = "moe::Expert") : MLP<T>(spec, std::move(name)) {}
};

/// E experts of the same spec evaluated together: the hot path of every mixture model.
/// Shapes: x is in x B; y is (E out) x B, expert e in rows [e out, (e+1) out), so the column of a
/// sample is its out x E matrix of expert outputs. The first layers of all experts are one GEMM
/// over their stacked weights; later layers are one GEMM per expert, spread over threads.
/// Parameters are named as a ModuleList of nn.Sequential: "{e}.0.weight", "{e}.2.bias", ... (also for E = 1)
template <class T>
class ExpertBank : public MLP<T> {
public:
    ExpertBank(Index experts, const MLPSpec& spec, std::string name = "moe::ExpertBank")
        : MLP<T>(spec, std::move(name), experts, /*shared_input=*/true, /*always_indexed=*/true) {}

    Index experts() const { return this->groups(); }
    /// Output width of one expert.
    Index expert_dim() const { return this->spec().sizes.back(); }
};

}  // namespace moe
