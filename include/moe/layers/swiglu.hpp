#pragma once
// The SwiGLU feed-forward of Mixtral and LLaMA: y = w2 (silu(w1 x) .* (w3 x)), no biases.
//
// Built from three GroupedLinear layers without bias, so that one class serves a dense feed-forward
// (one group, names "w1.weight", ...) and the bank of experts of a SparseMoE (G groups on column
// segments, names "{e}.w1.weight", ... as Mixtral's ModuleList of experts with w1, w2, w3).
#include <cmath>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/module.hpp"
#include "moe/core/threads.hpp"
#include "moe/layers/grouped_linear.hpp"

namespace moe {

/// SwiGLU feed-forward(s) d -> ffn -> d. Shapes: x is d x S, y d x S; with G groups, group g runs on
/// the columns [offsets[g], offsets[g+1]) (forward_segments; GroupedLinear's column segments).
/// Parameters per group: "w1.weight" (ffn x d), "w2.weight" (d x ffn), "w3.weight" (ffn x d), under
/// "{g}." when G > 1 or always_indexed. Init: nn.Linear(bias=False)'s, U(-1/sqrt(in), 1/sqrt(in)).
template <class T>
class SwiGLU : public Composite<SwiGLU<T>> {
public:
    using Scalar = T;

    SwiGLU(Index dim, Index ffn, Index groups = 1, std::string name = "moe::SwiGLU", bool always_indexed = false)
        : name_(std::move(name)), indexed_(groups > 1 || always_indexed),
          w1_(groups, dim, ffn, GroupedInput::column_segments, name_ + ".w1", always_indexed, /*bias=*/false),
          w2_(groups, ffn, dim, GroupedInput::column_segments, name_ + ".w2", always_indexed, false),
          w3_(groups, dim, ffn, GroupedInput::column_segments, name_ + ".w3", always_indexed, false) {}

    const std::string& name() const { return name_; }
    Index groups() const { return w1_.groups(); }
    Index in_features() const { return w1_.in_features(); }
    Index out_features() const { return w2_.out_features(); }

    template <class F>
    void for_each_child(F&& f) {
        const std::string base = indexed_ ? "{}" : "";
        f(join_name(base, "w1"), w1_);
        f(join_name(base, "w2"), w2_);
        f(join_name(base, "w3"), w3_);
    }
    /// Group after group (its w1, w2, w3), as PyTorch initialises a ModuleList of experts.
    void reset_parameters(Rng& rng) {
        for (Index g = 0; g < groups(); ++g) reset_group(g, rng);
    }
    void reset_group(Index g, Rng& rng) {
        w1_.reset_group(g, rng);
        w2_.reset_group(g, rng);
        w3_.reset_group(g, rng);
    }

    /// One group on every column of x (a dense feed-forward). Keeps a view of x for backward.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::require(groups() == 1, name_, "::forward: ", groups(), " groups need forward_segments");
        whole_[0] = 0;
        whole_[1] = x.cols();
        return forward_segments(x, whole_, true);
    }
    /// Group g on columns [offsets[g], offsets[g+1]) of x (shared_columns: every group on columns
    /// [0, its length)); offsets must stay valid until backward. Keeps a view of x.
    const MatrixView<T>& forward_segments(const ConstView<T>& x, const Index* offsets, bool shared_columns) {
        detail::check_rows(x, in_features(), name_, "forward");
        const MatrixView<T>& h1 = w1_.forward_segments(x, offsets, shared_columns);
        const MatrixView<T>& h3 = w3_.forward_segments(x, offsets, shared_columns);
        auto& a = a_.resize(h1.rows(), h1.cols());
        detail::for_each_range(h1.size(), 8.0 * double(h1.size()), [&](Index i0, Index i1) {
            for (Index i = i0; i < i1; ++i) a.data()[i] = silu(h1.data()[i]) * h3.data()[i];
        });
        return w2_.forward_segments(ConstView<T>(a), offsets, false);
    }
    const MatrixView<T>& output() const { return w2_.output(); }

    /// Adds the weights' gradients and returns dx (d x S; with shared columns d x the longest
    /// segment), or an empty matrix when input_grad is false.
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        const MatrixView<T>& da = w2_.backward(dy, true);
        const MatrixView<T>& h1 = w1_.output();
        const MatrixView<T>& h3 = w3_.output();
        auto& d1 = dh1_.resize(h1.rows(), h1.cols());
        auto& d3 = dh3_.resize(h1.rows(), h1.cols());
        detail::for_each_range(h1.size(), 12.0 * double(h1.size()), [&](Index i0, Index i1) {
            for (Index i = i0; i < i1; ++i) {
                const T z = h1.data()[i], s = sigmoid(z), g = da.data()[i];
                d3.data()[i] = g * z * s;                                   // d/d(w3 x) = silu(w1 x)
                d1.data()[i] = g * h3.data()[i] * s * (T(1) + z * (T(1) - s));  // silu'(z) = s (1 + z (1 - s))
            }
        });
        const MatrixView<T>& dx1 = w1_.backward(ConstView<T>(d1), input_grad);
        if (!input_grad) {
            w3_.backward(ConstView<T>(d3), false);
            return dx1;
        }
        auto& dx = dx_.resize(dx1.rows(), dx1.cols());
        dx = dx1;
        dx += w3_.backward(ConstView<T>(d3), true);
        return dx;
    }

    /// Sizes every buffer for up to `columns` columns, so that varying routing allocates nothing.
    void reserve_columns(Index columns) {
        for (auto* l : {&w1_, &w2_, &w3_}) l->reserve_columns(columns);
        for (auto* b : {&a_, &dh1_, &dh3_}) b->reserve(w1_.out_features() * columns);
        dx_.reserve(in_features() * columns);
    }

private:
    static T sigmoid(T z) { return z >= T(0) ? T(1) / (T(1) + std::exp(-z)) : std::exp(z) / (T(1) + std::exp(z)); }
    static T silu(T z) { return z * sigmoid(z); }

    std::string name_;
    bool indexed_;
    GroupedLinear<T> w1_, w2_, w3_;
    Index whole_[2] = {0, 0};
    Buffer<T> a_, dh1_, dh3_, dx_;
};

}  // namespace moe
