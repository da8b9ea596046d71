#pragma once
// Learning-rate schedules as functions of the step (or epoch) count t, in closed form.
#include <cmath>

#include "moe/core/errors.hpp"

namespace moe {

/// torch.optim.lr_scheduler.CosineAnnealingLR:
/// lr(t) = eta_min + (base_lr - eta_min) (1 + cos(pi t / t_max)) / 2.
struct CosineAnnealingLR {
    double base_lr, t_max, eta_min;
    CosineAnnealingLR(double base, double tmax, double min_lr = 0.0) : base_lr(base), t_max(tmax), eta_min(min_lr) {
        detail::require(tmax > 0, "moe::CosineAnnealingLR: t_max must be positive, got ", tmax);
    }
    double operator()(double t) const {
        const double pi = 3.14159265358979323846;
        return eta_min + (base_lr - eta_min) * (1.0 + std::cos(pi * t / t_max)) / 2.0;
    }
};

/// torch.optim.lr_scheduler.StepLR: lr(t) = base_lr * gamma^floor(t / step_size).
struct StepLR {
    double base_lr, step_size, gamma;
    StepLR(double base, double step, double g = 0.1) : base_lr(base), step_size(step), gamma(g) {
        detail::require(step > 0, "moe::StepLR: step_size must be positive, got ", step);
        detail::require(g > 0, "moe::StepLR: gamma must be positive, got ", g);
    }
    double operator()(double t) const { return base_lr * std::pow(gamma, std::floor(t / step_size)); }
};

}  // namespace moe
