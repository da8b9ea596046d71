#pragma once
// The specs of the model kinds as JSON (the `config` of a model file), each spec's fields listed once.
//
// A spec lists its fields in one function, visit_fields(spec, v), which calls v(name, member) for
// every field; writing and reading are two visitors over that one list, so a field added to a spec
// is added to the file format in one line. Reading is strict where nlohmann's conversions are not:
// an integer field must hold a JSON integer in range ("experts": 4.7 or 1e300 is an error, not 4 or
// undefined behaviour), an enum a known name, a key the spec does not have is an error, and a field
// that is absent keeps the spec's default (a config written by hand lists only what it changes).
// Errors are config_error naming the field ("tasks[1].kind: ...").
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/features/feature_spec.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/moe_transformer.hpp"
#include "moe/models/ple.hpp"
#include "moe/models/shared_bottom.hpp"
#include "moe/models/sparse_mmoe.hpp"
#include "moe/models/sparse_moe.hpp"

namespace moe {
namespace detail {

using json = nlohmann::json;

// ---- the field lists ------------------------------------------------------------------------------
// S is the spec or const spec: one list serves both writing (const) and reading.

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, TaskSpec>> {
    v("name", s.name);
    v("kind", s.kind);
    v("classes", s.classes);
    v("relu_output", s.relu_output);
}

template <class S, class V>
void visit_multitask_fields(S& s, V&& v) {  // the MultiTaskSpec part of MMoE, PLE and SharedBottom specs
    v("input", s.input);
    v("tower_hidden", s.tower_hidden);
    v("tasks", s.tasks);
    v("activation", s.activation);
    v("batchnorm", s.batchnorm);
    v("tower_dropout", s.tower_dropout);
    v("surfaces", s.surfaces);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, MMoESpec>> {
    visit_multitask_fields(s, v);
    v("experts", s.experts);
    v("expert_hidden", s.expert_hidden);
    v("expert_dim", s.expert_dim);
    v("gate_hidden", s.gate_hidden);
    v("expert_dropout", s.expert_dropout);
    v("expert_output_activation", s.expert_output_activation);
    v("shared_gate", s.shared_gate);
    v("gate", s.gate);
    v("dselect_k", s.dselect_k);
    v("dselect_gamma", s.dselect_gamma);
    v("dselect_entropy", s.dselect_entropy);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, SparseMMoESpec>> {
    visit_fields(static_cast<std::conditional_t<std::is_const_v<S>, const MMoESpec, MMoESpec>&>(s), v);
    v("k", s.k);
    v("renormalize", s.renormalize);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, SharedBottomSpec>> {
    visit_multitask_fields(s, v);
    v("bottom_hidden", s.bottom_hidden);
    v("bottom_dim", s.bottom_dim);
    v("bottom_dropout", s.bottom_dropout);
    v("bottom_output_activation", s.bottom_output_activation);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, PLELevelSpec>> {
    v("shared_experts", s.shared_experts);
    v("task_experts", s.task_experts);
    v("expert_hidden", s.expert_hidden);
    v("expert_dim", s.expert_dim);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, PLESpec>> {
    visit_multitask_fields(s, v);
    v("levels", s.levels);
    v("expert_dropout", s.expert_dropout);
    v("expert_output_activation", s.expert_output_activation);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, SparseMoESpec>> {
    v("dim", s.dim);
    v("ffn", s.ffn);
    v("experts", s.experts);
    v("k", s.k);
    v("routing", s.routing);
    v("activation", s.activation);
    v("expert", s.expert);
    v("renormalize", s.renormalize);
    v("noisy", s.noisy);
    v("router_bias", s.router_bias);
    v("capacity_factor", s.capacity_factor);
    v("dropped", s.dropped);
    v("balance_coef", s.balance_coef);
    v("importance_coef", s.importance_coef);
    v("load_coef", s.load_coef);
    v("z_coef", s.z_coef);
    v("noise_seed", s.noise_seed);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, MoETransformerLayerSpec>> {
    v("dim", s.dim);
    v("heads", s.heads);
    v("causal", s.causal);
    v("attention_dropout", s.attention_dropout);
    v("norm", s.norm);
    v("norm_eps", s.norm_eps);
    v("ffn", s.ffn);
    v("activation", s.activation);
    v("expert", s.expert);
    v("experts", s.experts);
    v("moe", s.moe);
    v("shared_experts", s.shared_experts);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, MoETransformerSpec>> {
    v("vocab", s.vocab);
    v("max_positions", s.max_positions);
    v("layers", s.layers);
    v("tied_head", s.tied_head);
    v("layer", s.layer);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, TableSpec>> {
    v("name", s.name);
    v("rows", s.rows);
    v("dim", s.dim);
    v("padding_idx", s.padding_idx);
    v("vocabulary", s.vocabulary);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, SparseFeatureSpec>> {
    v("name", s.name);
    v("table", s.table);
    v("pooling", s.pooling);
    v("max_length", s.max_length);
    v("attention_target", s.attention_target);
    v("attention_hidden", s.attention_hidden);
    v("attention_softmax", s.attention_softmax);
}

template <class S, class V>
auto visit_fields(S& s, V&& v) -> std::enable_if_t<std::is_same_v<std::remove_const_t<S>, FeatureSpec>> {
    v("dense", s.dense);
    v("dense_mean", s.dense_mean);
    v("dense_std", s.dense_std);
    v("tables", s.tables);
    v("sparse", s.sparse);
}

// ---- enums as names -------------------------------------------------------------------------------
/// The file names of an enum's values, one table per enum; to_string and from_string read it.
template <class E>
struct EnumNames;
template <>
struct EnumNames<DroppedTokens> {
    static constexpr const char* what = "dropped-token policy";
    static constexpr std::pair<DroppedTokens, const char*> names[] = {{DroppedTokens::zero, "zero"},
                                                                     {DroppedTokens::passthrough, "passthrough"}};
};
template <>
struct EnumNames<Routing> {
    static constexpr const char* what = "routing";
    static constexpr std::pair<Routing, const char*> names[] = {{Routing::top_k, "top_k"}, {Routing::expert_choice, "expert_choice"}};
};
template <>
struct EnumNames<ExpertKind> {
    static constexpr const char* what = "expert kind";
    static constexpr std::pair<ExpertKind, const char*> names[] = {{ExpertKind::mlp, "mlp"}, {ExpertKind::swiglu, "swiglu"}};
};
template <>
struct EnumNames<NormKind> {
    static constexpr const char* what = "norm";
    static constexpr std::pair<NormKind, const char*> names[] = {{NormKind::layer_norm, "layer_norm"}, {NormKind::rms_norm, "rms_norm"}};
};

template <class E, class = decltype(EnumNames<E>::names)>
const char* to_string(E value) {
    for (const auto& [e, name] : EnumNames<E>::names)
        if (e == value) return name;
    return "?";
}
template <class E, class = decltype(EnumNames<E>::names)>
void from_string(const std::string& s, E& out) {
    std::string expected;
    const std::size_t n = std::size(EnumNames<E>::names);
    for (std::size_t i = 0; i < n; ++i) {
        const auto& [e, name] = EnumNames<E>::names[i];
        if (s == name) {
            out = e;
            return;
        }
        expected += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + name;
    }
    throw config_error(concat("unknown ", EnumNames<E>::what, " '", s, "' (expected ", expected, ")"));
}

inline void from_string(const std::string& s, ActivationKind& k) { k = activation_from_string(s); }
inline void from_string(const std::string& s, TaskKind& k) {
    for (auto c : {TaskKind::binary, TaskKind::regression, TaskKind::multiclass})
        if (s == moe::to_string(c)) {
            k = c;
            return;
        }
    throw config_error("unknown task kind '" + s + "' (expected binary, regression or multiclass)");
}
inline void from_string(const std::string& s, GateKind& k) {
    for (auto c : {GateKind::softmax, GateKind::dselect_k})
        if (s == moe::to_string(c)) {
            k = c;
            return;
        }
    throw config_error("unknown gate kind '" + s + "' (expected softmax or dselect_k)");
}
inline void from_string(const std::string& s, PoolingMode& m) { m = pooling_mode_from_string(s); }

template <class E>
constexpr bool is_spec_enum = std::is_same_v<E, ActivationKind> || std::is_same_v<E, TaskKind> ||
                              std::is_same_v<E, DroppedTokens> || std::is_same_v<E, GateKind> ||
                              std::is_same_v<E, PoolingMode> || std::is_same_v<E, Routing> || std::is_same_v<E, ExpertKind> ||
                              std::is_same_v<E, NormKind>;

template <class S, class = void>
struct has_fields : std::false_type {};
template <class S>
struct has_fields<S, std::void_t<decltype(visit_fields(std::declval<S&>(), std::declval<void (*)(const char*, int&)>()))>> : std::true_type {};

// ---- writing --------------------------------------------------------------------------------------
template <class V>
json field_json(const V& v) {
    if constexpr (is_spec_enum<V>) {
        using moe::to_string;
        using detail::to_string;
        return to_string(v);
    } else if constexpr (has_fields<const V>::value) {
        json j = json::object();
        visit_fields(v, [&](const char* name, const auto& member) { j[name] = field_json(member); });
        return j;
    } else if constexpr (std::is_same_v<V, std::optional<std::int64_t>>) {
        return v ? json(*v) : json(nullptr);
    } else if constexpr (std::is_same_v<V, std::vector<Index>> || std::is_same_v<V, std::string> || !std::is_class_v<V>) {
        return v;
    } else {  // a vector of specs (tasks, levels)
        json a = json::array();
        for (const auto& e : v) a.push_back(field_json(e));
        return a;
    }
}

/// The spec as a JSON object with every field.
template <class Spec>
json spec_to_json(const Spec& s) {
    return field_json(s);
}

// ---- reading --------------------------------------------------------------------------------------
inline std::string type_name(const json& j) {
    if (j.is_number_float()) return "the number " + j.dump();
    return std::string(j.type_name()) + " " + j.dump();
}

inline void read_field(const json& j, const std::string& path, bool& out) {
    if (!j.is_boolean()) throw config_error(path + ": expected true or false, got " + type_name(j));
    out = j.get<bool>();
}
inline void read_field(const json& j, const std::string& path, Index& out) {
    // Only JSON integers: 4.7 would truncate and 1e300 overflow (undefined behaviour) in a conversion.
    if (j.is_number_unsigned()) {
        const auto v = j.get<std::uint64_t>();
        if (v > std::uint64_t(std::numeric_limits<Index>::max()))
            throw config_error(concat(path, ": ", v, " is out of range"));
        out = static_cast<Index>(v);
        return;
    }
    if (!j.is_number_integer()) throw config_error(path + ": expected an integer, got " + type_name(j));
    out = static_cast<Index>(j.get<std::int64_t>());
}
inline void read_field(const json& j, const std::string& path, std::uint64_t& out) {
    if (!j.is_number_unsigned()) throw config_error(path + ": expected a non-negative integer, got " + type_name(j));
    out = j.get<std::uint64_t>();
}
inline void read_field(const json& j, const std::string& path, double& out) {
    if (!j.is_number()) throw config_error(path + ": expected a number, got " + type_name(j));
    out = j.get<double>();
}
inline void read_field(const json& j, const std::string& path, std::string& out) {
    if (!j.is_string()) throw config_error(path + ": expected a string, got " + type_name(j));
    out = j.get<std::string>();
}
inline void read_field(const json& j, const std::string& path, std::optional<std::int64_t>& out) {
    if (j.is_null()) {
        out.reset();
        return;
    }
    Index v = 0;
    read_field(j, path, v);
    out = std::int64_t(v);
}
template <class E>
std::enable_if_t<is_spec_enum<E>> read_field(const json& j, const std::string& path, E& out) {
    if (!j.is_string()) throw config_error(path + ": expected a name, got " + type_name(j));
    try {
        from_string(j.get<std::string>(), out);
    } catch (const config_error& e) {
        throw config_error(path + ": " + e.what());
    }
}
template <class S>
std::enable_if_t<has_fields<S>::value> read_field(const json& j, const std::string& path, S& out);
template <class V>
void read_field(const json& j, const std::string& path, std::vector<V>& out) {
    if (!j.is_array()) throw config_error(path + ": expected an array, got " + type_name(j));
    out.assign(j.size(), V{});
    for (std::size_t i = 0; i < j.size(); ++i) read_field(j[i], concat(path, "[", i, "]"), out[i]);
}
/// An object: every field present is read, absent ones keep their defaults, unknown keys are errors.
template <class S>
std::enable_if_t<has_fields<S>::value> read_field(const json& j, const std::string& path, S& out) {
    if (!j.is_object()) throw config_error(path + ": expected an object, got " + type_name(j));
    std::set<std::string> known;
    visit_fields(out, [&](const char* name, auto& member) {
        known.insert(name);
        const auto it = j.find(name);
        if (it != j.end()) read_field(*it, path + "." + name, member);
    });
    for (auto it = j.begin(); it != j.end(); ++it)
        if (!known.count(it.key())) {
            std::string fields;
            for (const auto& k : known) fields += (fields.empty() ? "" : ", ") + k;
            throw config_error(concat(path, ": unknown field '", it.key(), "' (the fields are ", fields, ")"));
        }
}

/// Reads a spec from JSON into s (which supplies the defaults of absent fields). Errors name the
/// field as "config.tasks[1].kind: ...".
template <class Spec>
void spec_from_json(const json& j, Spec& s) {
    read_field(j, "config", s);
}

}  // namespace detail
}  // namespace moe
