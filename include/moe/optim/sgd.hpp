#pragma once
// SGD with momentum, as torch.optim.SGD (dampening, nesterov and L2 weight decay included):
//   g = grad + wd p;  b = g (first step) or momentum b + (1 - dampening) g
//   g = nesterov ? g + momentum b : b;  p -= lr g
#include <cmath>

#include "moe/core/errors.hpp"
#include "moe/core/parameters.hpp"

namespace moe {

struct SGDOptions {
    double lr = 1e-2;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;
    bool nesterov = false;
};

/// Stochastic gradient descent over a flat parameter vector.
template <class T>
class SGD {
public:
    explicit SGD(SGDOptions o = {}) : o_(o) {
        detail::require(o.lr >= 0 && std::isfinite(o.lr), "moe::SGD: lr must be >= 0, got ", o.lr);
        detail::require(o.momentum >= 0, "moe::SGD: momentum must be >= 0, got ", o.momentum);
        detail::require(o.weight_decay >= 0, "moe::SGD: weight_decay must be >= 0, got ", o.weight_decay);
        detail::require(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                        "moe::SGD: nesterov needs momentum > 0 and dampening 0");
    }

    void step(Vector<T>& values, const Vector<T>& grads) {
        if (values.size() != grads.size())
            throw shape_error(detail::concat("moe::SGD::step: ", values.size(), " values but ", grads.size(), " gradients"));
        const T lr = T(o_.lr), wd = T(o_.weight_decay), mom = T(o_.momentum), damp = T(o_.dampening);
        const bool first = buf_.size() == 0;
        if (o_.momentum != 0 && first) buf_.resize(values.size());
        for (Index i = 0; i < values.size(); ++i) {
            T g = grads[i] + wd * values[i];
            if (o_.momentum != 0) {
                buf_[i] = first ? g : mom * buf_[i] + (T(1) - damp) * g;
                g = o_.nesterov ? g + mom * buf_[i] : buf_[i];
            }
            values[i] -= lr * g;
        }
    }
    template <class Store>
    void step(Store& store) {
        step(store.values(), store.grads());
    }
    double lr() const { return o_.lr; }
    void set_lr(double lr) { o_.lr = lr; }

private:
    SGDOptions o_;
    Vector<T> buf_;
};

}  // namespace moe
