#pragma once
// torch.nn.functional.softmax(input, dim): the input's shape. dim is required (PyTorch's implicit
// choice is deprecated).
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Softmax {
    static constexpr const char* type = "torch.nn.functional.softmax";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim"});
        c.expect_inputs(1, 1);
        const Index d = c.dim_index(c.int_param("dim"), c.input(0).rank());
        if (c.input(0)[d] == kBatch)
            throw c.error("softmax over dim " + std::to_string(d) + ", the batch dimension of " + to_string(c.input(0)) +
                          ": it would mix the samples of a batch (a gate's softmax is over its experts, dim 1 or -1)");
        return {c.input(0), 0.0, 4.0 * c.input(0).per_sample()};
    }
};

}  // namespace moe::graph::ops
