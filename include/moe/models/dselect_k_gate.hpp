#pragma once
// DSelect-k gates (Hazimeh et al., NeurIPS 2021): differentiable sparse gates over E experts for a
// multi-task mixture, one per task, all reading the same input.
//
// Each gate has k single-expert selectors. Selector i reads m = ceil(log2 E) logits z_i (one per bit
// of an expert's index) through the smooth step
//     S(t) = 0 (t <= -gamma/2),  1 (t >= gamma/2),  -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 otherwise,
// and gives expert e the weight r_i(e) = prod_j (bit_j(e) ? S(z_ij) : 1 - S(z_ij)), bit 0 the most
// significant: r_i sums to 1 over the 2^m codes and, once every S(z_ij) has reached 0 or 1, selects
// one expert exactly. The gate mixes its selectors with softmax weights a = softmax(w):
//     q(e) = sum_i a_i r_i(e).
// z = W_z x + b_z (k m per gate) and w = W_w x + b_w (k per gate) depend on the sample (the paper's
// per-example gate). Training adds an auxiliary loss (aux_loss()): the entropy regulariser
// entropy_coef * sum_i H(r_i), which drives each selector to a single expert, and, when E is not a
// power of two, sum_i 1 / sum_e r_i(e), which keeps the selectors off the codes that name no expert;
// both as the paper's reference code has them, averaged over the samples of the batch.
//
// Shapes as GateBank: x is in x B, the gate weights q are (G E) x B (gate g in rows [g E, (g+1) E)).
// Parameters "{g}.z.weight" (k m x in), "{g}.z.bias", "{g}.w.weight" (k x in), "{g}.w.bias".
#include <cmath>
#include <string>

#include "moe/core/module.hpp"
#include "moe/layers/grouped_linear.hpp"
#include "moe/layers/softmax.hpp"

namespace moe {

template <class T>
class DSelectKGateBank : public Composite<DSelectKGateBank<T>> {
public:
    using Scalar = T;

    /// always_indexed: gate g's names hold its index even when G = 1 (a ModuleList of one).
    DSelectKGateBank(Index gates, Index in_features, Index experts, Index k, double gamma, double entropy_coef,
                     std::string name = "moe::DSelectKGateBank", bool always_indexed = false)
        : name_(checked(std::move(name), gates, experts, k, gamma, entropy_coef)), gates_(gates), experts_(experts), k_(k),
          bits_(bits_for(experts)), gamma_(gamma), entropy_coef_(entropy_coef), indexed_(gates > 1 || always_indexed),
          z_(gates, in_features, k * bits_for(experts), GroupedInput::shared, name_ + ".z", indexed_),
          w_(gates, in_features, k, GroupedInput::shared, name_ + ".w", indexed_) {}

    Index gates() const { return gates_; }
    Index experts() const { return experts_; }
    Index in_features() const { return z_.in_features(); }
    const std::string& name() const { return name_; }

    template <class F>
    void for_each_child(F&& f) {
        f(indexed_ ? "{}.z" : "z", z_);
        f(indexed_ ? "{}.w" : "w", w_);
    }
    /// The reference initialisation: z ~ U(-gamma/100, gamma/100) (every smooth step starts near 1/2,
    /// every expert equally likely), w ~ U(-0.05, 0.05) (Keras' RandomUniform default).
    void reset_parameters(Rng& rng) {
        auto uniform = [&](Param<T>& p, double bound) {
            for (Index i = 0; i < p.size(); ++i) p.value_vec()(i) = T(rng.uniform(-bound, bound));
        };
        uniform(z_.weight(), gamma_ / 100);
        uniform(z_.bias(), gamma_ / 100);
        uniform(w_.weight(), 0.05);
        uniform(w_.bias(), 0.05);
    }

    /// Gate weights ((G E) x B). Keeps a view of x for backward; computes aux_loss().
    const MatrixView<T>& forward(const ConstView<T>& x) {
        const MatrixView<T>& z = z_.forward(x);
        const MatrixView<T>& w = w_.forward(x);
        const Index n = x.cols();
        auto& q = q_.resize(gates_ * experts_, n);
        auto& r = r_.resize(gates_ * k_ * experts_, n);
        auto& a = a_.resize(gates_ * k_, n);
        gate_weights(z, w, q, &r, &a);
        aux_loss_ = 0;
        for (Index b = 0; b < n; ++b)
            for (Index s = 0; s < gates_ * k_; ++s) aux_loss_ += selector_penalty(&r(s * experts_, b), nullptr);
        aux_loss_ /= double(n);
        return q;
    }

    /// Gate weights into caller scratch (the result lives in c); caches nothing.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b, Buffer<T>& c) const {
        const MatrixView<T>& z = z_.infer(x, a);
        const MatrixView<T>& w = w_.infer(x, b);
        auto& q = c.resize(gates_ * experts_, x.cols());
        gate_weights(z, w, q, nullptr, nullptr);
        return q;
    }

    /// The weighted regulariser of the last forward (entropy_coef * entropy, plus the reachability
    /// term when E is not a power of two), averaged over the batch.
    double aux_loss() const { return aux_loss_; }

    /// dq is (G E) x B; adds the gradients of sum(dq .* q) + aux_loss() and returns dx (or an empty matrix).
    const MatrixView<T>& backward(const ConstView<T>& dq, bool input_grad = true) {
        detail::check_shape(dq, q_.rows(), q_.cols(), name_, "backward", "gate gradient");
        const Index n = dq.cols(), e_count = experts_, m = bits_;
        const auto& z = z_.output();
        const auto& r = r_.view();
        const auto& a = a_.view();
        auto& dz = dz_.resize(z.rows(), n);
        auto& dw = dw_.resize(a.rows(), n);
        dr_.resize(e_count, 1);
        for (Index b = 0; b < n; ++b)
            for (Index g = 0; g < gates_; ++g) {
                const T* dqg = dq.data() + b * dq.outerStride() + g * e_count;
                // Through the softmax mix: da_i = dq . r_i, dr_i = a_i dq (+ the regulariser's gradient).
                T dot = 0;
                for (Index i = 0; i < k_; ++i) {
                    const Index s = g * k_ + i;
                    const T* ri = &r(s * e_count, b);
                    T da = 0;
                    for (Index e = 0; e < e_count; ++e) da += dqg[e] * ri[e];
                    dw(s, b) = da;  // becomes the softmax's input gradient below
                    dot += a(s, b) * da;
                    T* dri = dr_.view().data();
                    for (Index e = 0; e < e_count; ++e) dri[e] = a(s, b) * dqg[e];
                    selector_penalty(ri, dri, T(1) / T(n));
                    // Through the product of smooth steps: dr / ds_ij = +-prod over the other bits.
                    for (Index j = 0; j < m; ++j) {
                        const T zij = z(s * m + j, b);
                        T ds = 0;
                        for (Index e = 0; e < e_count; ++e) {
                            T others = 1;
                            for (Index l = 0; l < m; ++l)
                                if (l != j) others *= factor(z(s * m + l, b), bit(e, l));
                            ds += dri[e] * (bit(e, j) ? others : -others);
                        }
                        dz(s * m + j, b) = ds * smooth_step_derivative(zij);
                    }
                }
                for (Index i = 0; i < k_; ++i) dw(g * k_ + i, b) = a(g * k_ + i, b) * (dw(g * k_ + i, b) - dot);
            }
        const MatrixView<T>& dxz = z_.backward(dz, input_grad);
        if (!input_grad) {
            w_.backward(dw, false);
            return dx_.resize(0, 0);
        }
        auto& dx = dx_.resize(dxz.rows(), dxz.cols());
        dx = dxz;
        dx += w_.backward(dw, true);
        return dx;
    }

    /// Gate weights of the last forward.
    const MatrixView<T>& output() const { return q_.view(); }

private:
    static std::string checked(std::string name, Index gates, Index experts, Index k, double gamma, double entropy) {
        detail::require(gates > 0, name, ": needs at least one gate, got ", gates);
        detail::require(experts >= 2, name, ": DSelect-k needs at least 2 experts, got ", experts);
        detail::require(k >= 1 && k <= experts, name, ": k must be in [1, experts = ", experts, "], got ", k);
        detail::require(gamma > 0 && std::isfinite(gamma), name, ": gamma must be positive, got ", gamma);
        detail::require(entropy >= 0 && std::isfinite(entropy), name, ": the entropy coefficient must be >= 0, got ", entropy);
        return name;
    }
    static Index bits_for(Index experts) {
        Index m = 0;
        while ((Index(1) << m) < experts) ++m;
        return m;
    }
    /// Bit j of expert e's code, bit 0 the most significant (numpy's binary_repr, as the reference).
    bool bit(Index e, Index j) const { return (e >> (bits_ - 1 - j)) & 1; }
    T smooth_step(T t) const {
        const T half = T(gamma_ / 2);
        if (t <= -half) return T(0);
        if (t >= half) return T(1);
        return T(-2 / (gamma_ * gamma_ * gamma_)) * t * t * t + T(3 / (2 * gamma_)) * t + T(0.5);
    }
    T smooth_step_derivative(T t) const {
        const T half = T(gamma_ / 2);
        if (t <= -half || t >= half) return T(0);
        return T(-6 / (gamma_ * gamma_ * gamma_)) * t * t + T(3 / (2 * gamma_));
    }
    T factor(T z, bool one) const { return one ? smooth_step(z) : T(1) - smooth_step(z); }

    /// q, and when given the selectors' r ((G k E) x B) and mixing weights a ((G k) x B).
    void gate_weights(const MatrixView<T>& z, const MatrixView<T>& w, MatrixView<T>& q, MatrixView<T>* r_out,
                      MatrixView<T>* a_out) const {
        const Index n = z.cols(), e_count = experts_, m = bits_;
        detail::for_each_sample(n, double(gates_ * k_ * e_count * m), [&](Index b) {
            T s[64];
            for (Index g = 0; g < gates_; ++g) {
                // Softmax over the gate's k selector logits.
                T mx = w(g * k_, b);
                for (Index i = 1; i < k_; ++i) mx = std::max(mx, w(g * k_ + i, b));
                T sum = 0;
                for (Index i = 0; i < k_; ++i) sum += std::exp(w(g * k_ + i, b) - mx);
                T* qg = &q(g * e_count, b);
                for (Index e = 0; e < e_count; ++e) qg[e] = 0;
                for (Index i = 0; i < k_; ++i) {
                    const Index sel = g * k_ + i;
                    const T ai = std::exp(w(sel, b) - mx) / sum;
                    if (a_out) (*a_out)(sel, b) = ai;
                    for (Index j = 0; j < m; ++j) s[j] = smooth_step(z(sel * m + j, b));
                    T* ri = r_out ? &(*r_out)(sel * e_count, b) : nullptr;
                    for (Index e = 0; e < e_count; ++e) {
                        T p = 1;
                        for (Index j = 0; j < m; ++j) p *= bit(e, j) ? s[j] : T(1) - s[j];
                        if (ri) ri[e] = p;
                        qg[e] += ai * p;
                    }
                }
            }
        });
    }

    /// The regulariser of one selector's weights r (E): entropy_coef * H(r) (+ 1 / sum r when E is
    /// not a power of two). With dr, adds scale * its gradient to dr instead and returns 0.
    double selector_penalty(const T* r, T* dr, T scale = T(1)) const {
        constexpr double eps = 1e-6;  // as the reference: log(r + eps), finite at r = 0
        const bool unreachable = (Index(1) << bits_) != experts_;
        double value = 0, total = 0;
        for (Index e = 0; e < experts_; ++e) total += double(r[e]);
        for (Index e = 0; e < experts_; ++e) {
            const double v = double(r[e]);
            if (dr) {
                T g = T(0);
                if (entropy_coef_ > 0) g += T(-entropy_coef_ * (std::log(v + eps) + v / (v + eps)));
                if (unreachable) g += T(-1.0 / (total * total));
                dr[e] += scale * g;
            } else if (entropy_coef_ > 0) {
                value -= entropy_coef_ * v * std::log(v + eps);
            }
        }
        if (!dr && unreachable) value += 1.0 / total;
        return value;
    }

    std::string name_;
    Index gates_, experts_, k_, bits_;
    double gamma_, entropy_coef_;
    bool indexed_;
    GroupedLinear<T> z_, w_;
    Buffer<T> q_, r_, a_, dz_, dw_, dr_, dx_;
    double aux_loss_ = 0;
};

}  // namespace moe
