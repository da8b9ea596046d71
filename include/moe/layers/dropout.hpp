#pragma once
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/module.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"

namespace moe {

/// Inverted dropout: in training each entry is zeroed with probability p and the others are scaled
/// by 1 / (1 - p); in evaluation it is the identity. Shapes: x, y are F x B. Seeded: the same seed
/// gives the same masks. `freeze_mask(true)` reuses the last mask (for gradient checks).
template <class T>
class Dropout : public ParameterFree {
public:
    using Scalar = T;
    explicit Dropout(double p, std::uint64_t seed = 0, std::string name = "moe::Dropout")
        : name_(std::move(name)), p_(p), rng_(seed) {
        detail::require(p >= 0.0 && p < 1.0, name_, ": dropout p must be in [0, 1), got ", p);
    }

    double p() const { return p_; }
    const std::string& name() const { return name_; }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        auto& y = y_.resize(x.rows(), x.cols());
        if (!training_ || p_ == 0.0) {
            y = x;
            return y;
        }
        auto& mask = mask_.view();
        if (!(frozen_ && mask.rows() == x.rows() && mask.cols() == x.cols())) {
            auto& m = mask_.resize(x.rows(), x.cols());
            const T keep_scale = T(1.0 / (1.0 - p_));
            for (Index i = 0; i < m.size(); ++i) m.data()[i] = rng_.uniform() < p_ ? T(0) : keep_scale;
        }
        y = x.cwiseProduct(mask_.view());
        return y;
    }
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        auto& y = out.resize(x.rows(), x.cols());
        y = x;
        return y;
    }
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, y_.rows(), y_.cols(), name_, "backward", "output gradient");
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        if (!training_ || p_ == 0.0)
            dx = dy;
        else
            dx = dy.cwiseProduct(mask_.view());
        return dx;
    }
    /// With frozen masks, training forwards reuse the last mask while the shape matches.
    void freeze_mask(bool on) { frozen_ = on; }
    /// No parameters; draws the seed of its mask stream (so a model's seed fixes its masks).
    void reset_parameters(Rng& rng) { rng_ = Rng(rng.split()); }
    void set_training(bool on) { training_ = on; }
    /// Sizes the buffers for up to rows x columns, so that varying shapes never allocate.
    void reserve(Index rows, Index columns) {
        y_.reserve(rows * columns);
        mask_.reserve(rows * columns);
        dx_.reserve(rows * columns);
    }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    std::string name_;
    double p_;
    Rng rng_;
    bool training_ = true, frozen_ = false;
    Buffer<T> y_, mask_, dx_;
};

}  // namespace moe
