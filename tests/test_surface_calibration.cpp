// Calibration per surface and task: Calibration::fit against the single calibrators fitted on each
// surface's samples, what apply changes and what it leaves, FeatureModel::predict with and without
// calibration, the model file's copy of it, and bad input.
#include <cmath>
#include <vector>

#include "moe/io/feature_model_file.hpp"
#include "support/catch.hpp"
#include "support/specs.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_surface_calibration {

using namespace moe;
using Catch::Matchers::Contains;

namespace {

/// Held-out predictions of a click task (binary) and a time task (regression) on 3 surfaces:
/// surface 0 overconfident, 1 underconfident, 2 calibrated; every third click label masked on
/// surface 1.
struct Heldout {
    std::vector<TaskSpec> tasks = {binary_task("click"), regression_task("time")};
    std::vector<Matrix<double>> preds;
    Matrix<double> labels, mask;
    std::vector<Index> surfaces;
};

Heldout heldout(Index n, std::uint64_t seed) {
    Heldout h;
    Rng rng(seed);
    h.preds = {Matrix<double>(1, n), Matrix<double>(1, n)};
    h.labels.resize(2, n);
    h.mask = Matrix<double>::Ones(2, n);
    for (Index j = 0; j < n; ++j) {
        const Index s = j % 3;
        h.surfaces.push_back(s);
        const double z = rng.normal(), p_true = 1.0 / (1.0 + std::exp(-z));
        const double scale = s == 0 ? 3.0 : s == 1 ? 0.3 : 1.0;  // the model's logit is scale * z
        h.preds[0](0, j) = 1.0 / (1.0 + std::exp(-scale * z));
        h.labels(0, j) = rng.uniform() < p_true ? 1.0 : 0.0;
        h.preds[1](0, j) = z;
        h.labels(1, j) = 2.0 * z;
        if (s == 1 && j % 9 == 1) h.mask(0, j) = 0.0, h.labels(0, j) = 7.0;  // a masked label is never read
    }
    return h;
}

/// The labelled click samples of surface s.
void surface_samples(const Heldout& h, Index s, std::vector<double>& p, std::vector<double>& y) {
    p.clear(), y.clear();
    for (Index j = 0; j < h.labels.cols(); ++j)
        if (h.surfaces[std::size_t(j)] == s && h.mask(0, j) != 0.0) p.push_back(h.preds[0](0, j)), y.push_back(h.labels(0, j));
}

FeatureSpec item_features() {
    FeatureSpec f;
    f.dense = 2;
    f.add_table("items", 20, 3).add_feature("item", "items");
    return f;
}

FeatureBatch<double> item_batch(Index n, std::uint64_t seed) {
    Rng rng(seed);
    FeatureBatch<double> b;
    b.dense.resize(2, n);
    Bags<double>& item = b.sparse["item"];
    for (Index j = 0; j < n; ++j) {
        b.dense(0, j) = rng.normal(), b.dense(1, j) = rng.normal();
        item.ids.push_back(std::int64_t(rng.below(20)));
        item.offsets.push_back(std::int64_t(item.ids.size()));
    }
    return b;
}

}  // namespace

TEST_CASE("Calibration::fit: per surface, the calibrator fitted on that surface's labelled samples", "[calibration][surfaces]") {
    const Heldout h = heldout(3000, 1);
    for (CalibrationMethod method : {CalibrationMethod::platt, CalibrationMethod::isotonic}) {
        INFO(to_string(method));
        const Calibration c = Calibration::fit(h.tasks, 3, h.preds, h.labels, h.mask, h.surfaces, method);
        std::vector<double> p, y;
        for (Index s = 0; s < 3; ++s) {
            surface_samples(h, s, p, y);
            CHECK(c.at(s, 0).method == method);
            CHECK(c.at(s, 1).method == CalibrationMethod::none);  // regression: passes through
            if (method == CalibrationMethod::platt) {
                std::vector<double> logits;
                for (double v : p) logits.push_back(std::log(v / (1 - v)));
                const PlattScaling ref = PlattScaling::fit(logits, y);
                CHECK(c.at(s, 0).platt.a == ref.a);
                CHECK(c.at(s, 0).platt.b == ref.b);
            } else {
                const IsotonicRegression ref = IsotonicRegression::fit(p, y);
                CHECK(c.at(s, 0).isotonic.thresholds() == ref.thresholds());
                CHECK(c.at(s, 0).isotonic.values() == ref.values());
            }
        }
        // Applied: ECE falls on the miscalibrated surfaces; the regression task is copied.
        std::vector<ConstView<double>> raw = {h.preds[0], h.preds[1]};
        std::vector<Buffer<double>> out;
        std::vector<ConstView<double>> views;
        c.apply(raw, SurfaceIds(h.surfaces), out, views);
        CHECK(Matrix<double>(views[1]) == h.preds[1]);
        const std::vector<Matrix<double>> after = {Matrix<double>(views[0]), Matrix<double>(views[1])};
        const auto before_m = surface_calibration_metrics(h.tasks, 3, h.preds, h.labels, h.mask, h.surfaces, 10);
        const auto after_m = surface_calibration_metrics(h.tasks, 3, after, h.labels, h.mask, h.surfaces, 10);
        REQUIRE(before_m.size() == 3);  // one binary task on 3 surfaces
        for (Index s = 0; s < 2; ++s) {
            INFO("surface " << s << ": ECE " << before_m[std::size_t(s)].ece << " -> " << after_m[std::size_t(s)].ece);
            CHECK(after_m[std::size_t(s)].ece < 0.5 * before_m[std::size_t(s)].ece);
            CHECK(std::abs(after_m[std::size_t(s)].ratio - 1.0) < 0.05);
        }
        CHECK(before_m[1].count == 1000 - 334);  // surface 1's masked click labels are not counted
    }
}

TEST_CASE("Calibration: bad held-out data and mismatched models give clear errors", "[calibration][surfaces][errors]") {
    Heldout h = heldout(60, 2);
    // A surface whose labels hold one class only.
    Matrix<double> one_class = h.labels;
    for (Index j = 0; j < one_class.cols(); ++j)
        if (h.surfaces[std::size_t(j)] == 2) one_class(0, j) = 0.0;
    CHECK_THROWS_WITH(Calibration::fit(h.tasks, 3, h.preds, one_class, h.mask, h.surfaces, CalibrationMethod::platt),
                      Contains("task 'click' on surface 2") && Contains("one class only"));
    CHECK_THROWS_AS(Calibration::fit(h.tasks, 4, h.preds, h.labels, h.mask, h.surfaces, CalibrationMethod::isotonic), config_error);
    CHECK_THROWS_WITH(Calibration::fit(h.tasks, 4, h.preds, h.labels, h.mask, h.surfaces, CalibrationMethod::isotonic),
                      Contains("surface 3 has no labelled held-out samples"));
    std::vector<Index> bad_ids = h.surfaces;
    bad_ids[5] = 9;
    CHECK_THROWS_WITH(Calibration::fit(h.tasks, 3, h.preds, h.labels, h.mask, bad_ids, CalibrationMethod::platt),
                      Contains("surface 9 of sample 5 is unknown"));
    std::vector<Matrix<double>> nan_preds = h.preds;
    nan_preds[0](0, 4) = std::nan("");
    CHECK_THROWS_WITH(Calibration::fit(h.tasks, 3, nan_preds, h.labels, h.mask, h.surfaces, CalibrationMethod::platt),
                      Contains("task 'click' on surface 1") && Contains("expected a probability in [0, 1]"));
    CHECK_THROWS_AS(Calibration::fit(h.tasks, 3, {h.preds[0]}, h.labels, h.mask, h.surfaces, CalibrationMethod::platt), config_error);

    FeatureModel<MMoE<double>> model(item_features(), [] {
        MMoESpec s = testing::small_mmoe({binary_task("click"), regression_task("time")});
        s.input = 0;
        return s;
    }());
    CHECK_THROWS_WITH(model.set_calibration(Calibration(3, h.tasks)), Contains("the calibration is for 3 surfaces, the model has 1"));
    CHECK_THROWS_WITH(model.set_calibration(Calibration(1, {binary_task("like"), regression_task("time")})),
                      Contains("the calibration is for the tasks"));
    CHECK(model.calibration().empty());
    CHECK_THROWS_WITH(IsotonicRegression::from_points({0.1, 0.1}, {0.2, 0.3}), Contains("thresholds must increase"));
}

TEST_CASE("FeatureModel: predict calibrates by surface, keeps the raw scores, and the model file keeps the calibration",
          "[calibration][surfaces]") {
    MMoESpec spec = testing::small_mmoe({binary_task("click"), regression_task("time")});
    spec.input = 0;
    spec.surfaces = 2;
    FeatureModel<MMoE<double>> model(item_features(), spec, 3);
    model.eval();
    Calibration c(2, model.tasks());
    c.at(0, 0).method = CalibrationMethod::platt;
    c.at(0, 0).platt = PlattScaling{2.0, -0.5};
    c.at(1, 0).method = CalibrationMethod::isotonic;
    c.at(1, 0).isotonic = IsotonicRegression::from_points({0.2, 0.6}, {0.1, 0.9});
    model.set_calibration(c);

    const Index n = 50;
    const FeatureBatch<double> batch = item_batch(n, 4);
    std::vector<Index> ids;
    for (Index j = 0; j < n; ++j) ids.push_back(j % 2);
    FeatureWorkspace<double> ws;
    const std::vector<Matrix<double>> cal = {Matrix<double>(model.predict(batch, ws, ids)[0]), Matrix<double>(ws.raw()[1])};
    const Matrix<double> raw_click = ws.raw()[0], raw_time = ws.raw()[1];
    for (Index j = 0; j < n; ++j) {
        const double p = raw_click(0, j);
        const double expect = ids[std::size_t(j)] == 0 ? c.at(0, 0)(p) : c.at(1, 0)(p);
        CHECK(cal[0](0, j) == Approx(expect).epsilon(1e-12));
    }
    CHECK(Matrix<double>(model.predict(batch, ws, ids, false)[0]) == raw_click);
    CHECK(Matrix<double>(model.predict(batch, ws, ids)[1]) == raw_time);  // regression: not calibrated

    testing::TempDir dir("surface_calibration");
    const std::string path = dir.file("model.safetensors");
    save(model, path);
    const auto loaded = load_feature_model<MMoE<double>>(path);
    REQUIRE_FALSE(loaded.calibration().empty());
    FeatureWorkspace<double> ws2;
    CHECK(Matrix<double>(loaded.predict(batch, ws2, ids)[0]) == cal[0]);

    // A file whose calibration was tampered with is refused, naming the field.
    SafetensorsFile file = read_safetensors(path);
    auto j = nlohmann::json::parse(file.metadata.at("calibration"));
    j["calibrators"][1][0]["values"] = {0.9, 0.1};
    file.metadata["calibration"] = j.dump();
    write_safetensors(path, file);
    CHECK_THROWS_AS(load_feature_model<MMoE<double>>(path), io_error);
    CHECK_THROWS_WITH(load_feature_model<MMoE<double>>(path), Contains("calibration.calibrators[1][0]") && Contains("not decrease"));
    j = nlohmann::json::parse(read_safetensors(dir.file("model.safetensors")).metadata.at("calibration"));
    j["calibrators"][0][1] = {{"method", "platt"}, {"a", 1.0}, {"b", 0.0}};
    file.metadata["calibration"] = j.dump();
    write_safetensors(path, file);
    CHECK_THROWS_WITH(load_feature_model<MMoE<double>>(path), Contains("task 'time' is not binary"));
    file.metadata["calibration"] = "{";
    write_safetensors(path, file);
    CHECK_THROWS_WITH(load_feature_model<MMoE<double>>(path), Contains("calibration is not valid JSON"));
}

}  // namespace test_surface_calibration
