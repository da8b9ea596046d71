#pragma once
// Adam and AdamW on the flat parameter store, written to match torch.optim.Adam / AdamW (1.13)
// operation for operation:
//   Adam:  g = grad + wd * p (L2 penalty);          AdamW: p = p * (1 - lr * wd) (decoupled)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      (eps after the square root)
#include <cmath>
#include <cstdint>

#include "moe/core/errors.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/threads.hpp"
#include "moe/optim/adam_update.hpp"

namespace moe {

/// Settings of Adam/AdamW; the defaults are PyTorch's.
struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    bool decoupled_weight_decay = false;  ///< true: AdamW
};

/// Adam (or AdamW with decoupled_weight_decay) over a flat parameter vector. The moments are
/// allocated on the first step and have the size of the store.
template <class T>
class Adam {
public:
    explicit Adam(AdamOptions o = {}) : o_(o) { validate(o_); }

    /// One update of values from grads (same length). Allocation-free after the first call.
    void step(Vector<T>& values, const Vector<T>& grads) {
        if (values.size() != grads.size())
            throw shape_error(detail::concat("moe::Adam::step: ", values.size(), " values but ", grads.size(), " gradients"));
        if (m_.size() == 0) {
            m_ = Vector<T>::Zero(values.size());
            v_ = Vector<T>::Zero(values.size());
        } else if (m_.size() != values.size()) {
            throw shape_error(detail::concat("moe::Adam::step: the optimizer was used with ", m_.size(),
                                             " parameters, now given ", values.size()));
        }
        ++t_;
        // Scalars are formed in double and rounded once, as PyTorch does with its Python floats.
        detail::AdamScalars<T> s;
        s.b1 = T(o_.beta1), s.b2 = T(o_.beta2), s.wd = T(o_.weight_decay), s.eps = T(o_.eps);
        s.one_minus_b1 = T(1.0 - o_.beta1), s.one_minus_b2 = T(1.0 - o_.beta2);
        s.decay = T(1.0 - o_.lr * o_.weight_decay);
        const double t = static_cast<double>(t_);
        s.bc2_sqrt = T(std::sqrt(1.0 - std::pow(o_.beta2, t)));
        s.step_size = T(o_.lr / (1.0 - std::pow(o_.beta1, t)));
        s.decoupled = o_.decoupled_weight_decay && s.wd != T(0);
        s.l2 = s.wd != T(0) && !o_.decoupled_weight_decay;
        const Index n = values.size();
        // Threads take chunks of a fixed size (a multiple of any SIMD width): which elements fall in
        // a vector body or a scalar tail depends on the store's size only, so the bits never depend
        // on the thread count (a tail contracted into an FMA would otherwise round differently).
        parallel_for(n, kAdamChunk, 12.0 * double(n), [&](Index begin, Index end) {
            detail::adam_update(values.data() + begin, m_.data() + begin, v_.data() + begin, grads.data() + begin,
                                end - begin, s);
        });
    }
    template <class Store>
    void step(Store& store) {
        step(store.values(), store.grads());
    }

    double lr() const { return o_.lr; }
    void set_lr(double lr) {
        detail::require(lr >= 0 && std::isfinite(lr), "moe::Adam: lr must be >= 0, got ", lr);
        o_.lr = lr;
    }
    const AdamOptions& options() const { return o_; }
    std::int64_t step_count() const { return t_; }
    const Vector<T>& first_moment() const { return m_; }
    const Vector<T>& second_moment() const { return v_; }
    /// Restore a saved state (moments and step count), e.g. to resume training.
    void set_state(const Vector<T>& m, const Vector<T>& v, std::int64_t t) {
        if (m.size() != v.size()) throw shape_error("moe::Adam::set_state: moments of different sizes");
        m_ = m;
        v_ = v;
        t_ = t;
    }

private:
    /// Elements per chunk of the threaded update.
    static constexpr Index kAdamChunk = Index(1) << 14;
    static void validate(const AdamOptions& o) {
        detail::require(o.lr >= 0 && std::isfinite(o.lr), "moe::Adam: lr must be >= 0, got ", o.lr);
        detail::require(o.beta1 >= 0 && o.beta1 < 1, "moe::Adam: beta1 must be in [0, 1), got ", o.beta1);
        detail::require(o.beta2 >= 0 && o.beta2 < 1, "moe::Adam: beta2 must be in [0, 1), got ", o.beta2);
        detail::require(o.eps > 0, "moe::Adam: eps must be positive, got ", o.eps);
        detail::require(o.weight_decay >= 0, "moe::Adam: weight_decay must be >= 0, got ", o.weight_decay);
    }

    AdamOptions o_;
    Vector<T> m_, v_;
    std::int64_t t_ = 0;
};

/// AdamW: Adam with decoupled weight decay (torch.optim.AdamW; PyTorch's default weight_decay 0.01).
template <class T>
class AdamW : public Adam<T> {
public:
    explicit AdamW(AdamOptions o = with_default_decay()) : Adam<T>(decoupled(o)) {}

private:
    static AdamOptions with_default_decay() {
        AdamOptions o;
        o.weight_decay = 0.01;
        return o;
    }
    static AdamOptions decoupled(AdamOptions o) {
        o.decoupled_weight_decay = true;
        return o;
    }
};

}  // namespace moe
