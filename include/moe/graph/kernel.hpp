#pragma once
// What a node of a compiled graph runs: its op's forward and hand-written backward on graph
// tensors (graph/tensor.hpp), and its parameters, listed as PyTorch would name them under the node.
//
// The plan (graph/graph_model.hpp) owns every value and every value's gradient; a kernel writes its
// output into the buffer it is given and ADDS its inputs' gradients (a value read by two nodes gets
// the sum, as in autograd). Kernels are built for one node with its checked input and output shapes;
// at run time only the batch size changes.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/graph/op_context.hpp"
#include "moe/graph/tensor.hpp"

namespace moe {
template <class T>
class BatchNorm1d;
}

namespace moe::graph {

/// One input of a kernel at run time.
template <class T>
struct In {
    const T* data = nullptr;
    const Dims* dims = nullptr;
    Index size() const { return numel(*dims); }
};

/// A node's computation. `in` holds the inputs, `out` the output buffer of dims `out_dims`.
template <class T>
class Kernel {
public:
    virtual ~Kernel() = default;

    /// f(name under the node, Param&) for each parameter, in state_dict order ("weight", "bias").
    virtual void parameters(std::vector<std::pair<std::string, Param<T>*>>&) {}
    /// PyTorch's default initialisation of the parameters (and a dropout's stream), from rng.
    virtual void reset_parameters(Rng&) {}
    virtual void set_training(bool) {}
    /// The node's BatchNorm1d layers with their names under the node ("" for the node itself), for
    /// model files (running statistics).
    virtual void batchnorms(std::vector<std::pair<std::string, BatchNorm1d<T>*>>&) {}
    /// Dropout masks reused while the shape stays (gradient checks need one function).
    virtual void freeze_dropout(bool) {}
    /// The weighted auxiliary losses of the last forward (a block's gate regulariser); backward
    /// includes their gradients.
    virtual double aux_loss() const { return 0.0; }

    /// Evaluation semantics (BatchNorm's running statistics, no dropout); caches nothing, so a
    /// const plan may run it from several threads, each with its own buffers.
    virtual void infer(const std::vector<In<T>>& in, T* out, const Dims& out_dims) const = 0;
    /// The training forward (in training mode) or infer; caches what backward needs.
    virtual void forward(const std::vector<In<T>>& in, T* out, const Dims& out_dims) { infer(in, out, out_dims); }
    /// Adds the gradient of every input to din[i] (skipped where din[i] is null), given the output
    /// and its gradient `dout`, after the forward of the same inputs. Where fresh[i] is set, din[i]
    /// holds nothing yet and the kernel WRITES it instead (saves zeroing and reading the buffer).
    virtual void backward(const std::vector<In<T>>& in, const T* out, const T* dout, const Dims& out_dims,
                          const std::vector<T*>& din) = 0;

    /// Whether backward honours `fresh`; for the others the plan zeroes a fresh buffer first.
    virtual bool assigns_fresh_grads() const { return false; }
    /// Set by the plan before each backward (one entry per input) when assigns_fresh_grads().
    std::vector<char> fresh;
};

/// The ops that only re-index (unsqueeze, squeeze, reshape): the same elements in the same order.
template <class T>
class SameElements final : public Kernel<T> {
public:
    void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
        std::copy(in[0].data, in[0].data + in[0].size(), out);
    }
    void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                  const std::vector<T*>& din) override {
        if (!din[0]) return;
        const Index n = in[0].size();
        for (Index i = 0; i < n; ++i) din[0][i] += dout[i];
    }
};

/// Builds a node's kernel for scalar type T; the context holds the node, its params and input shapes.
template <class T>
using KernelFactory = std::unique_ptr<Kernel<T>> (*)(const OpContext&, const Shape& out);

}  // namespace moe::graph
