#pragma once
// torch.add and torch.mul(input, other): two tensors broadcast (PyTorch's rules), or one tensor and
// a number in the param `other`.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

template <class Name>
struct Binary {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params(is_add() ? std::set<std::string>{"other", "alpha"} : std::set<std::string>{"other"});
        c.number_param("alpha", 1.0);
        if (c.has("other")) {
            c.expect_inputs(1, 1);
            c.number_param("other", 0.0);
            return {c.input(0), 0.0, c.input(0).per_sample()};
        }
        c.expect_inputs(2, 2);
        bool ok = true;
        const Shape out = broadcast(c.input(0), c.input(1), ok);
        if (!ok)
            throw c.error("the shapes " + to_string(c.input(0)) + " and " + to_string(c.input(1)) +
                          " do not broadcast");
        return {out, 0.0, out.per_sample()};
    }

    static bool is_add() { return std::string(Name::value) == "torch.add"; }

    /// add: a + alpha b; mul: a b. b is a second input (broadcast as PyTorch does) or the scalar
    /// param `other`. Broadcast inputs get their gradients summed over the elements that read them.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        Run(bool scalar, T other, T alpha) : scalar_(scalar), other_(other), alpha_(alpha) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            if (scalar_) {
                for (Index i = 0; i < numel(d); ++i)
                    out[i] = is_add() ? in[0].data[i] + alpha_ * other_ : in[0].data[i] * other_;
                return;
            }
            const T* a = in[0].data;
            const T* b = in[1].data;
            Index j = 0;
            walk<2>(d, {broadcast_strides(*in[0].dims, d), broadcast_strides(*in[1].dims, d)},
                    [&](const std::array<Index, 2>& o) {
                        out[j++] = is_add() ? a[o[0]] + alpha_ * b[o[1]] : a[o[0]] * b[o[1]];
                    });
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            if (scalar_) {
                if (din[0])
                    for (Index i = 0; i < numel(d); ++i) din[0][i] += is_add() ? dout[i] : dout[i] * other_;
                return;
            }
            const T* a = in[0].data;
            const T* b = in[1].data;
            T* da = din[0];
            T* db = din[1];
            Index j = 0;
            walk<2>(d, {broadcast_strides(*in[0].dims, d), broadcast_strides(*in[1].dims, d)},
                    [&](const std::array<Index, 2>& o) {
                        const T g = dout[j++];
                        if (da) da[o[0]] += is_add() ? g : g * b[o[1]];
                        if (db) db[o[1]] += is_add() ? alpha_ * g : g * a[o[0]];
                    });
        }

    private:
        bool scalar_;
        T other_, alpha_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.has("other"), T(c.number_param("other", 0.0)),
                                        T(c.number_param("alpha", 1.0)));
    }
};

struct AddName {
    static constexpr const char* value = "torch.add";
};
struct MulName {
    static constexpr const char* value = "torch.mul";
};
using Add = Binary<AddName>;
using Mul = Binary<MulName>;

}  // namespace moe::graph::ops
