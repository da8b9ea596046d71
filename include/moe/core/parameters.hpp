#pragma once
// The flat parameter store. Every trainable value of a model lives in one contiguous vector, and
// every gradient in a second one of the same layout; layers hold views (Eigen::Map) into them.
// The optimizer then sees one vector: an Adam step is one vectorised pass, zero_grad one setZero.
//
// Binding is two-pass: a module lists its parameters through for_each_parameter(prefix, f), the
// store lays them out in that order (state_dict order) and points every Param's views into itself.
// Copying a model copies the store and re-binds (see Model<M>).
#include <string>
#include <unordered_map>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// One trainable tensor: its PyTorch shape (rows x cols; a bias is n x 1) and views of its value
/// and gradient in a ParameterStore. The memory is row-major, PyTorch's layout, so the store holds
/// exactly the bytes of the state_dict tensors and a weight's transpose is a free column-major view
/// (which is what lets the experts' first layers stack into one GEMM). Unbound views are empty.
template <class T>
struct Param {
    Index rows = 0, cols = 0;
    /// A stacked parameter: `parts` equal row blocks, each its own state_dict tensor (the weights of
    /// E experts as one (E * out) x in matrix). Its name holds "{}" where the part index goes.
    Index parts = 1;
    /// A 1-D tensor in PyTorch's state_dict (LayerNorm's weight, in_proj_bias): model files write it
    /// with shape [rows]. Biases named "*.bias" and BatchNorm's affine parameters are 1-D anyway.
    bool vector = false;
    ParamView<T> value{nullptr, 0, 0};
    ParamView<T> grad{nullptr, 0, 0};

    Param() = default;
    Param(Index r, Index c, Index p = 1) : rows(r), cols(c), parts(p) {}
    Param(const Param& o) : rows(o.rows), cols(o.cols), parts(o.parts), vector(o.vector) {}  // a copy is unbound until re-bound
    Param& operator=(const Param& o) {
        rows = o.rows;
        cols = o.cols;
        parts = o.parts;
        vector = o.vector;
        unbind();
        return *this;
    }
    Index size() const { return rows * cols; }
    bool bound() const { return value.data() != nullptr || size() == 0; }
    void bind(T* v, T* g) {
        new (&value) ParamView<T>(v, rows, cols);
        new (&grad) ParamView<T>(g, rows, cols);
    }
    void unbind() {
        new (&value) ParamView<T>(nullptr, 0, 0);
        new (&grad) ParamView<T>(nullptr, 0, 0);
    }
    /// The values (gradients) as one flat vector, row-major order: a bias as a vector.
    /// (A Param is a view: like a pointer, its constness does not reach the memory it views.)
    VectorView<T> value_vec() const { return VectorView<T>(ptr(value), size()); }
    VectorView<T> grad_vec() const { return VectorView<T>(ptr(grad), size()); }
    /// The transpose as a column-major cols x rows view of the same memory (for GEMM).
    MatrixView<T> value_t() const { return MatrixView<T>(ptr(value), cols, rows); }
    MatrixView<T> grad_t() const { return MatrixView<T>(ptr(grad), cols, rows); }

private:
    static T* ptr(const ParamView<T>& v) { return const_cast<T*>(v.data()); }
};

/// Values and gradients of all parameters of a model, each in one flat vector, in state_dict order.
template <class T>
class ParameterStore {
public:
    struct Entry {
        std::string name;
        Index offset, rows, cols;
        bool vector;  ///< 1-D in PyTorch's state_dict (Param::vector)
    };

    /// Lay out and bind every parameter the module lists. Values are zero until initialised.
    template <class Module>
    void bind(Module& module) {
        entries_.clear();
        index_.clear();
        Index total = 0;
        module.for_each_parameter("", [&](const std::string& name, Param<T>& p) {
            const auto slot = name.find("{}");
            if (p.parts > 1 && (slot == std::string::npos || p.rows % p.parts != 0))
                throw config_error("moe::ParameterStore: stacked parameter '" + name +
                                   "' needs a '{}' in its name and rows divisible by its parts");
            const Index part_rows = p.rows / p.parts;
            for (Index i = 0; i < p.parts; ++i) {
                std::string part_name = name;
                if (slot != std::string::npos) part_name.replace(slot, 2, std::to_string(i));
                if (index_.count(part_name))
                    throw config_error("moe::ParameterStore: duplicate parameter name '" + part_name + "'");
                index_.emplace(part_name, entries_.size());
                entries_.push_back({part_name, total, part_rows, p.cols, p.vector});
                total += part_rows * p.cols;
            }
        });
        if (values_.size() != total) {
            values_ = Vector<T>::Zero(total);
            grads_ = Vector<T>::Zero(total);
        }
        rebind(module);
    }

    /// Point the module's views at this store again (after a copy of module and store).
    template <class Module>
    void rebind(Module& module) {
        std::size_t i = 0;
        module.for_each_parameter("", [&](const std::string&, Param<T>& p) {
            const Entry& e = entries_.at(i);
            i += static_cast<std::size_t>(p.parts);
            p.bind(values_.data() + e.offset, grads_.data() + e.offset);
        });
    }

    /// All parameter values, one flat vector (state_dict order).
    Vector<T>& values() { return values_; }
    const Vector<T>& values() const { return values_; }
    /// All gradients, same layout as values().
    Vector<T>& grads() { return grads_; }
    const Vector<T>& grads() const { return grads_; }
    Index size() const { return values_.size(); }
    /// Zeroes every gradient, in ranges over the threads: a SparseMoE of 16 experts at d = 512 has
    /// 67 MB of them, 2% of its training step zeroed on one thread.
    void zero_grad() {
        detail::for_each_range(grads_.size(), detail::kElementwiseFlops * double(grads_.size()),
                               [&](Index begin, Index end) { grads_.segment(begin, end - begin).setZero(); });
    }

    const std::vector<Entry>& entries() const { return entries_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    const Entry& entry(const std::string& name) const {
        auto it = index_.find(name);
        if (it == index_.end()) throw config_error("moe::ParameterStore: no parameter named '" + name + "'");
        return entries_[it->second];
    }
    /// View of one named parameter's value (out x in for a weight, n x 1 for a bias), row-major.
    ParamView<T> value(const std::string& name) {
        const Entry& e = entry(name);
        return ParamView<T>(values_.data() + e.offset, e.rows, e.cols);
    }
    ParamView<T> grad(const std::string& name) {
        const Entry& e = entry(name);
        return ParamView<T>(grads_.data() + e.offset, e.rows, e.cols);
    }

private:
    std::vector<Entry> entries_;
    std::unordered_map<std::string, std::size_t> index_;
    Vector<T> values_, grads_;
};

/// Join a prefix and a name the way PyTorch's state_dict does ("experts.3" + "0.weight"); an empty
/// part adds no level (a composite's child that is not a named submodule).
inline std::string join_name(const std::string& prefix, const std::string& name) {
    if (name.empty()) return prefix;
    return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace moe
