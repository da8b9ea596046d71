#pragma once
// torch.bmm(input, other): [n, p, k] x [n, k, q] -> [n, p, q], no broadcasting.
#include "moe/graph/ops/matmul.hpp"

namespace moe::graph::ops {

struct Bmm {
    static constexpr const char* type = "torch.bmm";
    static OpShape shape(const OpContext& c) {
        c.allow_params({});
        c.expect_inputs(2, 2);
        const Shape& a = c.input(0);
        const Shape& b = c.input(1);
        if (a.rank() != 3 || b.rank() != 3)
            throw c.error("multiplies two 3-D tensors, got " + to_string(a) + " and " + to_string(b));
        if (a[0] != b[0])
            throw c.error("the batch dimensions differ: " + to_string(a) + " and " + to_string(b) +
                          " (bmm does not broadcast)");
        if (a[2] != b[1])
            throw c.error("contracts dimension 2 of " + to_string(a) + " (" + dim_string(a[2]) +
                          ") with dimension 1 of " + to_string(b) + " (" + dim_string(b[1]) + "): they differ");
        const Shape out{{a[0], a[1], b[2]}};
        return {out, 0.0, 2.0 * out.per_sample() * (a[2] == kBatch ? 1.0 : double(a[2]))};
    }
    /// torch.matmul's kernel: 3-D operands with equal batch dimensions are its plain case.
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape& out) {
        return Matmul::kernel<T>(c, out);
    }
};

}  // namespace moe::graph::ops
