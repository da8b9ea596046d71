#pragma once
#include <cstdint>
#include <utility>

#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"

namespace moe {

/// A module together with the flat ParameterStore it is bound to: what an optimizer trains.
/// Model<MLP<float>> net(spec, seed) builds the MLP, lays its parameters out in one store and
/// initialises them from the seed. Copies are deep: the copy gets its own store and re-binds.
template <class Module>
class Model : public Module {
public:
    using Scalar = typename Module::Scalar;

    template <class Spec>
    explicit Model(const Spec& spec, std::uint64_t seed = 0) : Module(spec) {
        params_.bind(static_cast<Module&>(*this));
        reset_parameters(seed);
    }
    Model(const Model& o) : Module(o), params_(o.params_) { params_.rebind(static_cast<Module&>(*this)); }
    Model& operator=(const Model& o) {
        if (this != &o) {
            Module::operator=(o);
            params_ = o.params_;
            params_.rebind(static_cast<Module&>(*this));
        }
        return *this;
    }
    // A move would leave views pointing into the moved-from store's old buffer only if the vector
    // reallocated; Eigen's move keeps the buffer, but re-binding is cheap and removes the doubt.
    Model(Model&& o) noexcept : Module(std::move(o)), params_(std::move(o.params_)) {
        params_.rebind(static_cast<Module&>(*this));
    }

    /// Re-initialise every parameter (PyTorch's defaults) and dropout stream from a seed.
    void reset_parameters(std::uint64_t seed) {
        Rng rng(seed);
        Module::reset_parameters(rng);
    }

    ParameterStore<Scalar>& params() { return params_; }
    const ParameterStore<Scalar>& params() const { return params_; }
    void zero_grad() { params_.zero_grad(); }

private:
    ParameterStore<Scalar> params_;
};

}  // namespace moe
