#pragma once
// The elementwise activations, modules and functions alike: torch.nn.ReLU, GELU, Sigmoid, Tanh and
// torch.nn.functional.relu, sigmoid. The output has the input's shape. (One rule for six types:
// each is a one-line struct here.)
#include "moe/graph/kernel.hpp"
#include "moe/layers/activations.hpp"

namespace moe::graph::ops {

template <class Name>
struct Elementwise {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params({});
        c.expect_inputs(1, 1);
        return {c.input(0), 0.0, c.input(0).per_sample()};
    }

    /// The library's activation on the elements, seen as a (last dim) x rest column-major matrix
    /// (the columns spread over threads for large batches).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const Index rows = d.empty() ? 1 : d.back(), cols = rows ? in[0].size() / rows : 0;
            MatrixView<T> y(out, rows, cols);
            moe::detail::activation_forward(Name::kind, ConstView<T>(in[0].data, rows, cols), y);
        }
        void backward(const std::vector<In<T>>& in, const T* out, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            if (!din[0]) return;
            const Index rows = d.empty() ? 1 : d.back(), cols = rows ? in[0].size() / rows : 0;
            MatrixView<T> dx(din[0], rows, cols);
            MatrixView<T>& target = this->fresh[0] ? dx : scratch_.resize(rows, cols);
            moe::detail::activation_backward(Name::kind, ConstView<T>(in[0].data, rows, cols),
                                             ConstView<T>(out, rows, cols), ConstView<T>(dout, rows, cols), target);
            if (!this->fresh[0]) dx += scratch_.view();
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        Buffer<T> scratch_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext&, const Shape&) {
        return std::make_unique<Run<T>>();
    }
};

struct ReLUName {
    static constexpr const char* value = "torch.nn.ReLU";
    static constexpr ActivationKind kind = ActivationKind::relu;
};
struct GELUName {
    static constexpr const char* value = "torch.nn.GELU";
    static constexpr ActivationKind kind = ActivationKind::gelu;
};
struct SigmoidName {
    static constexpr const char* value = "torch.nn.Sigmoid";
    static constexpr ActivationKind kind = ActivationKind::sigmoid;
};
struct TanhName {
    static constexpr const char* value = "torch.nn.Tanh";
    static constexpr ActivationKind kind = ActivationKind::tanh;
};
struct FunctionalReLUName {
    static constexpr const char* value = "torch.nn.functional.relu";
    static constexpr ActivationKind kind = ActivationKind::relu;
};
struct FunctionalSigmoidName {
    static constexpr const char* value = "torch.nn.functional.sigmoid";
    static constexpr ActivationKind kind = ActivationKind::sigmoid;
};

using ReLU = Elementwise<ReLUName>;
using GELU = Elementwise<GELUName>;
using Sigmoid = Elementwise<SigmoidName>;
using Tanh = Elementwise<TanhName>;
using FunctionalReLU = Elementwise<FunctionalReLUName>;
using FunctionalSigmoid = Elementwise<FunctionalSigmoidName>;

}  // namespace moe::graph::ops
