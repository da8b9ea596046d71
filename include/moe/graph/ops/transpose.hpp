#pragma once
// torch.transpose(input, dim0, dim1): the two dimensions swapped.
#include "moe/graph/op_context.hpp"

namespace moe::graph::ops {

struct Transpose {
    static constexpr const char* type = "torch.transpose";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim0", "dim1"});
        c.expect_inputs(1, 1);
        const Index r = c.input(0).rank();
        const Index a = c.dim_index(c.int_param("dim0"), r, "dim0"), b = c.dim_index(c.int_param("dim1"), r, "dim1");
        OpShape out{c.input(0), 0.0, 0.0};
        std::swap(out.out.dims[std::size_t(a)], out.out.dims[std::size_t(b)]);
        return out;
    }
};

}  // namespace moe::graph::ops
