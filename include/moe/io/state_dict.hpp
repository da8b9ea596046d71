#pragma once
// A model's state_dict: every tensor a model writes to a file under its PyTorch name, and the
// checked copy of a file's tensors into a model (used by load() and load_state_dict()).
//
// Names in a file can be rewritten on the way in by ordered rename rules (a regex and its
// replacement, as std::regex_replace applies them), so a model written by one's own PyTorch classes
// (experts.0.net.0.weight) loads into moe's names (experts.0.0.weight).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/core/model.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/layers/batchnorm.hpp"
#include "moe/optim/adam.hpp"

namespace moe {

/// One rename rule: every match of `pattern` (ECMAScript regex) in a tensor's name is replaced by
/// `replacement` ($1, $2, ... refer to groups), as std::regex_replace does.
struct RenameRule {
    std::string pattern, replacement;
};

/// How load() and load_state_dict() treat a file.
struct LoadOptions {
    bool strict = true;          ///< a tensor the model does not have is an error (false: ignored)
    bool convert_dtype = false;  ///< accept float32 tensors for a float64 model and the other way round
    bool check_finite = true;    ///< NaN or infinite values are an error
    /// Applied in order to every tensor name of the file before it is matched to the model's names.
    std::vector<RenameRule> renames;
};

namespace detail {

struct IgnoreBatchNorm {
    template <class B>
    void operator()(const std::string&, B&) const {}
};
template <class M, class = void>
struct has_batchnorm : std::false_type {};
template <class M>
struct has_batchnorm<M, std::void_t<decltype(std::declval<M&>().for_each_batchnorm(std::string(), IgnoreBatchNorm{}))>>
    : std::true_type {};

template <class T>
constexpr DType dtype_of() {
    return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}
/// The "dtype" of a model file's metadata.
template <class T>
const char* dtype_name() {
    return std::is_same_v<T, float> ? "float32" : "float64";
}

/// Every tensor a model has, with its PyTorch shape, and where its values live. A bias, the
/// BatchNorm affine parameters and those marked Param::vector are 1-D; every other is a 2-D weight.
template <class T>
struct TensorSlot {
    std::vector<std::int64_t> shape;
    T* data = nullptr;              // float tensors: their values, row-major
    std::int64_t* count = nullptr;  // num_batches_tracked (one counter for all members of a grouped BatchNorm)
};

template <class M>
std::map<std::string, TensorSlot<typename M::Scalar>> model_tensors(Model<M>& model) {
    using T = typename M::Scalar;
    std::map<std::string, TensorSlot<T>> slots;
    std::set<std::string> vectors;  // names of 1-D parameters: the BatchNorm affine ones
    if constexpr (has_batchnorm<M>::value) {
        model.for_each_batchnorm("", [&](const std::string& name, BatchNorm1d<T>& bn) {
            const Index parts = bn.parts(), n = bn.running_mean().size() / parts;
            for (Index p = 0; p < parts; ++p) {
                std::string base = name;
                const auto slot = base.find("{}");
                if (slot != std::string::npos) base.replace(slot, 2, std::to_string(p));
                vectors.insert(join_name(base, "weight"));
                vectors.insert(join_name(base, "bias"));
                slots[join_name(base, "running_mean")] = {{n}, bn.running_mean().data() + p * n, nullptr};
                slots[join_name(base, "running_var")] = {{n}, bn.running_var().data() + p * n, nullptr};
                slots[join_name(base, "num_batches_tracked")] = {{}, nullptr, &bn.num_batches_tracked()};
            }
        });
    }
    auto& store = model.params();
    for (const auto& e : store.entries()) {
        const bool vector = e.vector || vectors.count(e.name) || (e.cols == 1 && e.name.size() >= 5 &&
                                                      e.name.compare(e.name.size() - 5, 5, ".bias") == 0) ||
                            e.name == "bias";
        TensorSlot<T> s;
        s.shape = vector ? std::vector<std::int64_t>{e.rows} : std::vector<std::int64_t>{e.rows, e.cols};
        s.data = store.values().data() + e.offset;
        slots[e.name] = s;
    }
    return slots;
}

template <class T>
Tensor make_tensor(const std::vector<std::int64_t>& shape, const T* data) {
    Tensor t;
    t.dtype = dtype_of<T>();
    t.shape = shape;
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    t.bytes.resize(n * sizeof(T));
    std::memcpy(t.bytes.data(), data, t.bytes.size());
    return t;
}
inline Tensor make_count(std::int64_t v) {
    Tensor t;
    t.dtype = DType::i64;
    t.bytes.resize(8);
    std::memcpy(t.bytes.data(), &v, 8);
    return t;
}
inline std::string shape_string(const std::vector<std::int64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

/// Levenshtein distance, for "did you mean" in the missing-tensor message.
inline std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

/// "the file holds N tensors: a, b, ... (the closest: 'x')", for a missing tensor `name`.
inline std::string describe_file_names(const std::map<std::string, const Tensor*>& tensors, const std::string& name) {
    std::string closest, list;
    std::size_t best = std::string::npos, shown = 0;
    for (const auto& [n, t] : tensors) {
        (void)t;
        const std::size_t d = edit_distance(n, name);
        if (d < best) best = d, closest = n;
        if (shown++ < 12) list += (list.empty() ? "" : ", ") + n;
    }
    if (tensors.empty()) return "the file holds no tensors";
    if (shown > 12) list += concat(", ... (", shown - 12, " more)");
    return concat("the file holds ", tensors.size(), " tensors: ", list, "; the closest is '", closest, "'");
}

/// The file's tensors under their names after the rename rules. Two names that become one are an
/// io_error (the rules would silently drop a tensor). A template, and the regex type depends on it,
/// so that std::regex is instantiated only by programs that load files (about 45 s of compile time
/// per translation unit otherwise).
template <class Rules>
std::map<std::string, const Tensor*> renamed_tensors(const SafetensorsFile& file, const std::string& path,
                                                     const Rules& rules) {
    using Rule = typename Rules::value_type;
    using Regex = std::basic_regex<typename decltype(Rule::pattern)::value_type>;
    std::vector<Regex> regexes;
    for (const auto& r : rules) {
        try {
            regexes.emplace_back(r.pattern, Regex::ECMAScript);
        } catch (const std::regex_error& e) {
            throw config_error(concat("moe::LoadOptions: rename pattern '", r.pattern, "' is not a valid regex (", e.what(), ")"));
        }
    }
    std::map<std::string, const Tensor*> out;
    std::map<std::string, std::string> origin;
    for (const auto& [name, t] : file.tensors) {
        std::string n = name;
        for (std::size_t i = 0; i < rules.size(); ++i) n = std::regex_replace(n, regexes[i], rules[i].replacement);
        if (!out.emplace(n, &t).second)
            throw io_error(concat(path, ": the rename rules turn both '", origin[n], "' and '", name, "' into '", n, "'"));
        origin[n] = name;
    }
    return out;
}

/// Checks every tensor of the model (and, with adam, its state) against the file's tensors, then
/// copies them in; nothing is written before everything has been checked. Tensors the model does
/// not have are errors when strict (optimizer tensors are ignored when no optimizer is given).
template <class M>
void load_tensors(Model<M>& model, const std::map<std::string, const Tensor*>& tensors, const std::string& path,
                  const std::string& what, const LoadOptions& options, Adam<typename M::Scalar>* adam) {
    using T = typename M::Scalar;
    auto slots = model_tensors(model);
    std::set<std::string> expected;
    auto find = [&](const std::string& name) -> const Tensor& {
        const auto it = tensors.find(name);
        if (it == tensors.end())
            throw io_error(concat(path, ": tensor '", name, "' is missing (", describe_file_names(tensors, name), ")"));
        return *it->second;
    };
    auto check = [&](const std::string& name, const std::vector<std::int64_t>& shape, bool is_count) {
        expected.insert(name);
        const Tensor& t = find(name);
        if (t.shape != shape)
            throw io_error(concat(path, ": tensor '", name, "' has shape ", shape_string(t.shape), ", the model needs ",
                                  shape_string(shape)));
        if (is_count) {
            if (t.dtype != DType::i64) throw io_error(concat(path, ": tensor '", name, "' has dtype ", to_string(t.dtype), ", expected I64"));
            return;
        }
        if (t.dtype == DType::i64 || (t.dtype != dtype_of<T>() && !options.convert_dtype))
            throw io_error(concat(path, ": tensor '", name, "' has dtype ", to_string(t.dtype), ", expected ",
                                  to_string(dtype_of<T>()), t.dtype == DType::i64 ? "" : " (LoadOptions::convert_dtype converts)"));
        if (options.check_finite)
            for (T v : t.template values<T>())
                if (!std::isfinite(static_cast<double>(v)))
                    throw io_error(concat(path, ": tensor '", name, "' holds a non-finite value (", v, ")"));
    };
    for (const auto& [name, s] : slots) check(name, s.shape, s.count != nullptr);
    if (adam) {
        if (!tensors.count("optimizer.step"))
            throw io_error(concat(path, ": holds no optimizer state (saved without one), but an optimizer was given to load it into"));
        check("optimizer.step", {}, true);
        for (const auto& e : model.params().entries()) {
            check("optimizer.exp_avg." + e.name, slots.at(e.name).shape, false);
            check("optimizer.exp_avg_sq." + e.name, slots.at(e.name).shape, false);
        }
    }
    for (const auto& [name, t] : tensors) {
        (void)t;
        const bool optimizer_tensor = name.rfind("optimizer.", 0) == 0;
        if (!expected.count(name) && options.strict && !(optimizer_tensor && !adam))
            throw io_error(concat(path, ": tensor '", name, "' is not part of this ", what,
                                  " (LoadOptions::strict = false ignores it)"));
    }
    // Everything checked: copy.
    for (auto& [name, s] : slots) {
        const Tensor& t = find(name);
        if (s.count) {
            std::memcpy(s.count, t.bytes.data(), 8);
            continue;
        }
        const auto values = t.template values<T>();
        std::copy(values.begin(), values.end(), s.data);
    }
    if (adam) {
        const Index n = model.params().size();
        Vector<T> m(n), v(n);
        for (const auto& e : model.params().entries()) {
            const auto a = find("optimizer.exp_avg." + e.name).template values<T>();
            const auto b = find("optimizer.exp_avg_sq." + e.name).template values<T>();
            std::copy(a.begin(), a.end(), m.data() + e.offset);
            std::copy(b.begin(), b.end(), v.data() + e.offset);
        }
        std::int64_t step;
        std::memcpy(&step, find("optimizer.step").bytes.data(), 8);
        adam->set_state(m, v, step);
    }
}

}  // namespace detail
}  // namespace moe
