#pragma once
// The node types a graph may use: one header per op under graph/ops/, listed once here. Adding an
// op is writing its header (a struct with `type`, `shape(const OpContext&)` and
// `kernel<T>(const OpContext&, const Shape& out)`, graph/kernel.hpp) and one name below.
#include <map>
#include <string>
#include <type_traits>

#include "moe/graph/ops/batchnorm.hpp"
#include "moe/graph/ops/binary.hpp"
#include "moe/graph/ops/bmm.hpp"
#include "moe/graph/ops/cat.hpp"
#include "moe/graph/ops/dropout.hpp"
#include "moe/graph/ops/einsum.hpp"
#include "moe/graph/ops/elementwise.hpp"
#include "moe/graph/ops/layer_norm.hpp"
#include "moe/graph/ops/linear.hpp"
#include "moe/graph/ops/matmul.hpp"
#include "moe/graph/ops/moe_mlp.hpp"
#include "moe/graph/ops/moe_mmoe.hpp"
#include "moe/graph/ops/moe_ple.hpp"
#include "moe/graph/ops/reduce.hpp"
#include "moe/graph/ops/reshape.hpp"
#include "moe/graph/ops/select.hpp"
#include "moe/graph/ops/softmax.hpp"
#include "moe/graph/ops/squeeze.hpp"
#include "moe/graph/ops/stack.hpp"
#include "moe/graph/ops/transpose.hpp"
#include "moe/graph/ops/unsqueeze.hpp"

namespace moe::graph {

using ShapeRule = OpShape (*)(const OpContext&);

/// What the graph knows of an op: its shape rule and its kernels.
struct OpEntry {
    ShapeRule shape;
    KernelFactory<float> kernel_f32;
    KernelFactory<double> kernel_f64;
    template <class T>
    KernelFactory<T> kernel() const {
        if constexpr (std::is_same_v<T, float>)
            return kernel_f32;
        else
            return kernel_f64;
    }
};

namespace detail {
template <class... Ops>
std::map<std::string, OpEntry> make_registry() {
    return {{Ops::type, OpEntry{&Ops::shape, &Ops::template kernel<float>, &Ops::template kernel<double>}}...};
}
}  // namespace detail

/// Every known node type: its shape rule and kernels.
inline const std::map<std::string, OpEntry>& op_registry() {
    static const std::map<std::string, OpEntry> ops =
        detail::make_registry<ops::Linear, ops::ReLU, ops::GELU, ops::Sigmoid, ops::Tanh, ops::FunctionalReLU,
                              ops::FunctionalSigmoid, ops::Dropout, ops::BatchNorm1d, ops::LayerNorm, ops::Softmax,
                              ops::Stack, ops::Cat, ops::Matmul, ops::Bmm, ops::Einsum, ops::Unsqueeze, ops::Squeeze,
                              ops::Reshape, ops::Transpose, ops::Sum, ops::Mean, ops::Add, ops::Mul, ops::Select,
                              ops::MoeMLP, ops::MoeMMoE, ops::MoePLE>();
    return ops;
}

}  // namespace moe::graph
