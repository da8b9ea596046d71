#pragma once
// A Calibration as JSON, as model files store it in their metadata ("calibration"):
//
//   {"surfaces": S, "tasks": ["click", ...],
//    "calibrators": [[{"method": "none"} | {"method": "platt", "a": .., "b": ..} |
//                     {"method": "isotonic", "thresholds": [..], "values": [..]}, ... one per task], ... one per surface]}
//
// Reading checks everything (sizes, methods, finite numbers, isotonic points increasing) and names
// the field; the tasks must be the model's.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/tasks/surface_calibration.hpp"

namespace moe::detail {

using json = nlohmann::json;  // as in spec_json.hpp (the same alias may be declared twice)

inline nlohmann::json calibration_to_json(const Calibration& c) {
    nlohmann::json j;
    j["surfaces"] = c.surfaces();
    std::vector<std::string> names;
    for (const auto& t : c.tasks()) names.push_back(t.name);
    j["tasks"] = names;
    nlohmann::json per_surface = nlohmann::json::array();
    for (Index s = 0; s < c.surfaces(); ++s) {
        nlohmann::json per_task = nlohmann::json::array();
        for (std::size_t t = 0; t < c.tasks().size(); ++t) {
            const Calibrator& cal = c.at(s, t);
            nlohmann::json e;
            e["method"] = to_string(cal.method);
            if (cal.method == CalibrationMethod::platt) e["a"] = cal.platt.a, e["b"] = cal.platt.b;
            if (cal.method == CalibrationMethod::isotonic)
                e["thresholds"] = cal.isotonic.thresholds(), e["values"] = cal.isotonic.values();
            per_task.push_back(e);
        }
        per_surface.push_back(per_task);
    }
    j["calibrators"] = per_surface;
    return j;
}

/// Reads the calibration of a model of `surfaces` surfaces and these tasks; config_error naming
/// the field ("calibration.calibrators[1][0].a: ...") when anything is wrong.
inline Calibration calibration_from_json(const nlohmann::json& j, Index surfaces, const std::vector<TaskSpec>& tasks) {
    const std::string root = "calibration";
    auto field = [](const json& obj, const std::string& path, const char* key) -> const json& {
        require(obj.is_object(), path, ": expected an object");
        const auto it = obj.find(key);
        require(it != obj.end(), path, ": '", key, "' is missing");
        return *it;
    };
    auto number = [&](const json& obj, const std::string& path, const char* key) {
        const json& v = field(obj, path, key);
        require(v.is_number() && std::isfinite(v.get<double>()), path, ".", key, ": expected a finite number");
        return v.get<double>();
    };
    auto numbers = [&](const json& obj, const std::string& path, const char* key) {
        const json& v = field(obj, path, key);
        require(v.is_array(), path, ".", key, ": expected an array of numbers");
        std::vector<double> out;
        for (const json& x : v) {
            require(x.is_number(), path, ".", key, ": expected an array of numbers");
            out.push_back(x.get<double>());
        }
        return out;
    };
    const json& s = field(j, root, "surfaces");
    require(s.is_number_integer() && s.get<Index>() == surfaces, root, ".surfaces: is ", s.dump(), ", the model has ", surfaces);
    const json& names = field(j, root, "tasks");
    require(names.is_array() && names.size() == tasks.size(), root, ".tasks: expected the model's ", tasks.size(), " task names");
    for (std::size_t t = 0; t < tasks.size(); ++t)
        require(names[t].is_string() && names[t].get<std::string>() == tasks[t].name, root, ".tasks[", t, "]: is ", names[t].dump(),
                ", the model's task is '", tasks[t].name, "'");
    const json& cals = field(j, root, "calibrators");
    require(cals.is_array() && cals.size() == std::size_t(surfaces), root, ".calibrators: expected ", surfaces,
            " arrays (one per surface)");
    Calibration c(surfaces, tasks);
    for (Index si = 0; si < surfaces; ++si) {
        const json& row = cals[std::size_t(si)];
        require(row.is_array() && row.size() == tasks.size(), root, ".calibrators[", si, "]: expected ", tasks.size(),
                " calibrators (one per task)");
        for (std::size_t t = 0; t < tasks.size(); ++t) {
            const std::string path = concat(root, ".calibrators[", si, "][", t, "]");
            const json& e = row[t];
            const json& m = field(e, path, "method");
            require(m.is_string(), path, ".method: expected a string");
            const std::string method = m.get<std::string>();
            Calibrator& cal = c.at(si, t);
            if (method == "none") continue;
            require(tasks[t].kind == TaskKind::binary, path, ": task '", tasks[t].name, "' is not binary; only binary tasks are calibrated");
            if (method == "platt") {
                cal.method = CalibrationMethod::platt;
                cal.platt.a = number(e, path, "a");
                cal.platt.b = number(e, path, "b");
            } else if (method == "isotonic") {
                cal.method = CalibrationMethod::isotonic;
                cal.isotonic = IsotonicRegression::from_points(numbers(e, path, "thresholds"), numbers(e, path, "values"), path);
            } else {
                throw config_error(concat(path, ".method: '", method, "' is unknown (none, platt or isotonic)"));
            }
        }
    }
    return c;
}

}  // namespace moe::detail
