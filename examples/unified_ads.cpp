// The unified multi-surface ranking model on generated ads data: does MMoE pay off only when one
// model is trained on several surfaces at once (an ads platform's finding), and what do per-surface
// calibration and distillation add?
//
// Three surfaces (home feed, search, related ads) show the same users and ads, and the labels
// share structure everywhere: the user-ad affinity (latent factors, learnt through the user and ad
// IDs and the user's history), the ad's popularity (click) or quality (conversion), and one rule of
// the 16 context features. Each surface and task adds a nonlinear rule of the context of its own,
// and has its own base rate and label noise: sub-populations of one market. Conversion is known
// after a click only (masked).
//
// 1. Per surface: SharedBottom and MMoE trained on that surface alone, against SharedBottom and
//    MMoE trained on all surfaces with surface tower trees (a tower per task and surface; the
//    surface id is also an ID feature, so the gates see it). Test AUC of click and conversion. The
//    user's history is pooled by mean and by target attention against the ad (DIN).
// 2. Calibration of the unified MMoE per surface and task (Platt and isotonic, fitted on held-out
//    data): ECE before and after, and a reliability plot per surface (PNG).
// 3. Distillation of the unified MMoE into a student of a quarter of its multiply-adds (a smaller
//    MMoE without the attention): the teacher, the student trained on labels only, the student
//    distilled offline from the teacher's predictions (AUC), and the predict time of each for 300
//    candidates.
//
// Usage: unified_ads [--quick] [--seeds N] [--out DIR]   (seeded; a few minutes on 2 cores)
#include <moe/data/reliability_plot.hpp>
#include <moe/moe.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using T = float;
constexpr moe::Index kLatent = 8, kSurfaces = 3, kDense = 16, kMaxHistory = 30, kAttentionHidden = 16;
const char* const kSurfaceNames[kSurfaces] = {"home feed", "search", "related"};
const std::vector<moe::TaskSpec> kTasks = {moe::binary_task("click"), moe::binary_task("conversion")};

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

/// Users and ads with latent factors (their affinity drives every label on every surface), the
/// ads' popularity and quality, the users' histories, and the hidden rules of each surface.
struct World {
    moe::Matrix<double> users, ads;  // latent factors, kLatent x count
    std::vector<double> popularity, quality;
    std::vector<std::vector<std::int64_t>> history;  // per user: ads the user engaged with
    moe::Matrix<double> shared;                      // one direction of the context all surfaces share
    std::vector<moe::Matrix<double>> own;            // per surface and task: 3 directions of the context of its own
};

World make_world(moe::Index n_users, moe::Index n_ads, moe::Rng& rng) {
    World w;
    w.users.resize(kLatent, n_users);
    w.ads.resize(kLatent, n_ads);
    for (moe::Index i = 0; i < w.users.size(); ++i) w.users.data()[i] = rng.normal() * 1.5 / std::sqrt(double(kLatent));
    for (moe::Index i = 0; i < w.ads.size(); ++i) w.ads.data()[i] = rng.normal() * 1.5 / std::sqrt(double(kLatent));
    for (moe::Index a = 0; a < n_ads; ++a) w.popularity.push_back(0.8 * rng.normal()), w.quality.push_back(rng.normal());
    for (moe::Index u = 0; u < n_users; ++u) {
        // 5 to 30 past ads, each the best of 10 random ads by affinity: the history tells the factors.
        std::vector<std::int64_t> h;
        for (auto len = 5 + rng.below(26); len > 0; --len) {
            moe::Index best = 0;
            double best_affinity = -1e300;
            for (int c = 0; c < 10; ++c) {
                const auto a = moe::Index(rng.below(std::uint64_t(n_ads)));
                const double affinity = w.users.col(u).dot(w.ads.col(a));
                if (affinity > best_affinity) best_affinity = affinity, best = a;
            }
            h.push_back(best);
        }
        w.history.push_back(std::move(h));
    }
    auto directions = [&](moe::Index k) {
        moe::Matrix<double> m(k, kDense);
        for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.normal() / std::sqrt(double(kDense));
        return m;
    };
    w.shared = directions(1);
    for (moe::Index k = 0; k < kSurfaces * 2; ++k) w.own.push_back(directions(3));
    return w;
}

/// A surface's (and task's) own rule on the context x: a nonlinear function of 3 directions of it.
double own_rule(const moe::Matrix<double>& p, const moe::Vector<double>& x) {
    const moe::Vector<double> z = p * x;
    return 1.5 * std::tanh(2.0 * z(0)) * z(1) + 0.8 * std::abs(z(2)) - 0.6;
}

/// n impressions, the surfaces in proportion 5 : 3 : 2. Each has kDense context features; the
/// labels share the user-ad affinity, the ad's popularity (click) or quality (conversion) and one
/// rule of the context, and each surface and task adds a rule of its own, with its own base rate
/// and label noise.
moe::FeatureData<T> make_impressions(const World& w, moe::Index n, moe::Rng& rng) {
    moe::FeatureData<T> d;
    d.features.dense.resize(kDense, n);
    d.labels.resize(2, n);
    d.mask.resize(2, n);
    auto& user = d.features.sparse["user_id"];
    auto& ad = d.features.sparse["ad_id"];
    auto& surface = d.features.sparse["surface"];
    auto& history = d.features.sparse["history"];
    auto& attended = d.features.sparse["history_attention"];
    const auto n_users = std::uint64_t(w.users.cols()), n_ads = std::uint64_t(w.ads.cols());
    const double click_base[kSurfaces] = {-2.0, -0.3, -1.4}, conv_base[kSurfaces] = {-1.2, 0.4, -0.6};
    const double noise[kSurfaces] = {0.8, 0.3, 0.5};
    moe::Vector<double> x(kDense);
    for (moe::Index j = 0; j < n; ++j) {
        const double r = rng.uniform();
        const moe::Index s = r < 0.5 ? 0 : r < 0.8 ? 1 : 2;
        const auto u = moe::Index(rng.below(n_users)), a = moe::Index(rng.below(n_ads));
        for (moe::Index k = 0; k < kDense; ++k) x(k) = rng.normal();
        d.features.dense.col(j) = x.cast<T>();
        const double affinity = w.users.col(u).dot(w.ads.col(a)), common = std::tanh(1.5 * (w.shared * x)(0));
        const double click_logit = click_base[s] + 1.2 * affinity + 0.6 * w.popularity[std::size_t(a)] + 0.8 * common +
                                   1.2 * own_rule(w.own[std::size_t(2 * s)], x) + noise[s] * rng.normal();
        const double conv_logit = conv_base[s] + 0.8 * w.quality[std::size_t(a)] + 0.5 * affinity + 0.8 * common +
                                  1.2 * own_rule(w.own[std::size_t(2 * s + 1)], x) + noise[s] * rng.normal();
        const bool click = rng.uniform() < sigmoid(click_logit);
        d.labels(0, j) = T(click);
        d.labels(1, j) = T(click && rng.uniform() < sigmoid(conv_logit));
        d.mask(0, j) = 1;
        d.mask(1, j) = T(click);  // conversion is known after a click only
        d.surfaces.push_back(s);
        user.ids.push_back(u);
        ad.ids.push_back(a);
        surface.ids.push_back(s);
        const auto& h = w.history[std::size_t(u)];
        history.ids.insert(history.ids.end(), h.begin(), h.end());
        attended.ids.insert(attended.ids.end(), h.begin(), h.end());
        for (auto* bags : {&user, &ad, &surface, &history, &attended}) bags->offsets.push_back(std::int64_t(bags->ids.size()));
    }
    return d;
}

/// The samples of d on one surface (with surface ids 0 when `renumber`: a model of one surface).
moe::FeatureData<T> surface_subset(const moe::FeatureData<T>& d, moe::Index s, bool renumber) {
    std::vector<moe::Index> samples;
    for (moe::Index j = 0; j < d.size(); ++j)
        if (d.surfaces[std::size_t(j)] == s) samples.push_back(j);
    moe::FeatureData<T> out;
    moe::gather_samples(d.features, samples.data(), moe::Index(samples.size()), out.features);
    out.labels.resize(d.labels.rows(), moe::Index(samples.size()));
    out.mask.resize(d.mask.rows(), moe::Index(samples.size()));
    for (std::size_t k = 0; k < samples.size(); ++k) {
        out.labels.col(moe::Index(k)) = d.labels.col(samples[k]);
        out.mask.col(moe::Index(k)) = d.mask.col(samples[k]);
        if (!renumber) out.surfaces.push_back(s);
    }
    return out;
}

/// The features: dense context, user, ad, surface, the user's history by mean and (unless
/// `attention` is false) by target attention against the ad.
moe::FeatureSpec features(moe::Index n_users, moe::Index n_ads, bool attention = true) {
    moe::FeatureSpec f;
    f.dense = kDense;
    f.add_table("users", n_users, 8).add_table("ads", n_ads, 8).add_table("surfaces", kSurfaces, 4);
    f.add_feature("user_id", "users")
        .add_feature("ad_id", "ads")
        .add_feature("surface", "surfaces")  // the gates see the surface
        .add_feature("history", "ads", moe::PoolingMode::mean, kMaxHistory);
    // The same history weighted by its relevance to the candidate ad (DIN's target attention).
    if (attention) f.add_attention_feature("history_attention", "ads", "ad_id", kMaxHistory, {kAttentionHidden});
    return f;
}

moe::MMoESpec mmoe_spec(moe::Index surfaces, moe::Index experts, moe::Index hidden, moe::Index dim, moe::Index tower) {
    moe::MMoESpec s;  // input 0: the features' width
    s.experts = experts;
    s.expert_hidden = {hidden};
    s.expert_dim = dim;
    s.tower_hidden = {tower};
    s.tasks = kTasks;
    s.surfaces = surfaces;
    return s;
}
moe::SharedBottomSpec bottom_spec(moe::Index surfaces) {
    moe::SharedBottomSpec s;
    s.bottom_hidden = {96};
    s.bottom_dim = 16;
    s.tower_hidden = {16};
    s.tasks = kTasks;
    s.surfaces = surfaces;
    return s;
}

/// The samples of d without the attention feature, for a student that does not have it.
moe::FeatureData<T> without_attention(moe::FeatureData<T> d) {
    d.features.sparse.erase("history_attention");
    return d;
}

/// Multiply-adds per sample of the history's target attention (its MLP on every history item).
double attention_macs(const moe::FeatureData<T>& d, moe::Index dim) {
    const double items = double(d.features.sparse.at("history_attention").ids.size()) / double(d.size());
    return items * (4.0 * double(dim) * double(kAttentionHidden) + double(kAttentionHidden));
}

/// Multiply-adds of one sample through an MMoE (the tables' lookups aside).
double mmoe_macs(const moe::MMoESpec& s, moe::Index input) {
    double m = double(s.experts) * (double(input) * double(s.expert_hidden[0]) + double(s.expert_hidden[0]) * double(s.expert_dim));
    m += double(s.tasks.size()) * (double(input) * double(s.experts) + double(s.expert_dim) * double(s.tower_hidden[0]) +
                                   double(s.tower_hidden[0]));
    return m;
}

moe::FitOptions fit_options(int epochs, std::uint64_t seed) {
    moe::FitOptions o;
    o.epochs = epochs;
    o.batch_size = 256;
    o.lr = 2e-3;
    o.seed = seed;
    o.progress = moe::Progress::silent;
    return o;
}

/// Test AUC of click and conversion.
template <class Net>
std::vector<double> aucs(const moe::FeatureModel<Net>& model, const moe::FeatureData<T>& test) {
    std::vector<double> out;
    for (const auto& m : moe::evaluate(model, test)) out.push_back(m.auc.value_or(NAN));
    return out;
}

/// Trains a model of `Net` and returns its test AUCs per surface (click, conversion).
template <class Net>
std::vector<std::vector<double>> per_surface_aucs(const moe::FeatureSpec& f, const typename Net::Spec& spec, bool unified,
                                                  const moe::FeatureData<T>& train, const moe::FeatureData<T>& test, int epochs,
                                                  std::uint64_t seed) {
    moe::MultiTaskLoss<T> loss(kTasks);
    std::vector<std::vector<double>> out;
    if (unified) {
        moe::FeatureModel<Net> model(f, spec, seed);
        moe::fit(model, loss, train, nullptr, fit_options(epochs, seed));
        for (moe::Index s = 0; s < kSurfaces; ++s) out.push_back(aucs(model, surface_subset(test, s, false)));
        return out;
    }
    for (moe::Index s = 0; s < kSurfaces; ++s) {
        moe::FeatureModel<Net> model(f, spec, seed);
        moe::fit(model, loss, surface_subset(train, s, true), nullptr, fit_options(epochs, seed));
        out.push_back(aucs(model, surface_subset(test, s, true)));
    }
    return out;
}

/// Median seconds of `reps` predicts of 300 candidates of surface 0.
template <class Net>
double predict_seconds(const moe::FeatureModel<Net>& model, const moe::FeatureData<T>& test, int reps) {
    std::vector<moe::Index> first(300);
    for (std::size_t k = 0; k < first.size(); ++k) first[k] = moe::Index(k);
    moe::FeatureBatch<T> batch;
    moe::gather_samples(test.features, first.data(), 300, batch);
    moe::FeatureWorkspace<T> ws;
    model.predict(batch, ws, moe::Index(0));
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
        const auto start = std::chrono::steady_clock::now();
        model.predict(batch, ws, moe::Index(0));
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::nth_element(t.begin(), t.begin() + std::ptrdiff_t(t.size() / 2), t.end());
    return t[t.size() / 2];
}

std::vector<double> probabilities(const moe::Matrix<T>& preds, const moe::Matrix<T>& labels, const moe::Matrix<T>& mask,
                                  const std::vector<moe::Index>& surfaces, moe::Index s, std::size_t task, std::vector<double>& y) {
    std::vector<double> p;
    y.clear();
    for (moe::Index j = 0; j < labels.cols(); ++j)
        if (surfaces[std::size_t(j)] == s && mask(moe::Index(task), j) != 0) {
            p.push_back(double(preds(0, j)));
            y.push_back(double(labels(moe::Index(task), j)));
        }
    return p;
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false;
    int seeds = 4;
    std::string out_dir = "unified_ads_out";
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) quick = true, seeds = 1;
        else if (!std::strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = std::max(1, std::atoi(argv[++i]));
        else if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out_dir = argv[++i];
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--seeds N] [--out DIR]\n", argv[0]);
            return 2;
        }
    }
    const auto start = std::chrono::steady_clock::now();
    const moe::Index n_users = quick ? 200 : 600, n_ads = quick ? 150 : 400;
    const moe::Index n_train = quick ? 6000 : 90000, n_valid = quick ? 3000 : 30000, n_test = quick ? 3000 : 30000;
    const int epochs = quick ? 1 : 6;
    moe::Rng rng(11);
    const World world = make_world(n_users, n_ads, rng);
    const moe::FeatureData<T> train = make_impressions(world, n_train, rng), valid = make_impressions(world, n_valid, rng),
                              test = make_impressions(world, n_test, rng);
    const moe::FeatureSpec f = features(n_users, n_ads);
    std::printf("unified ads: %ld users, %ld ads, %ld / %ld / %ld train / held-out / test impressions on %ld surfaces, "
                "%d seed(s), %d epochs\n",
                long(n_users), long(n_ads), long(n_train), long(n_valid), long(n_test), long(kSurfaces), seeds, epochs);
    for (moe::Index s = 0; s < kSurfaces; ++s) {
        const auto sub = surface_subset(train, s, true);
        std::printf("  %-9s %6ld impressions, click rate %.3f, conversion per click %.3f\n", kSurfaceNames[s], long(sub.size()),
                    double(sub.labels.row(0).mean()), double(sub.labels.row(1).sum() / std::max<T>(1, sub.labels.row(0).sum())));
    }

    // --- 1. alone vs unified ---------------------------------------------------------------------
    const moe::MMoESpec mmoe1 = mmoe_spec(1, 4, 32, 16, 16), mmoe3 = mmoe_spec(kSurfaces, 4, 32, 16, 16);
    // results[model][surface][task], averaged over the seeds: SB alone, MMoE alone, SB unified, MMoE unified
    std::vector<std::vector<std::vector<double>>> results(4, std::vector<std::vector<double>>(kSurfaces, std::vector<double>(2, 0.0)));
    for (int seed = 1; seed <= seeds; ++seed) {
        const auto add = [&](std::size_t m, const std::vector<std::vector<double>>& r) {
            for (moe::Index s = 0; s < kSurfaces; ++s)
                for (std::size_t t = 0; t < 2; ++t) results[m][std::size_t(s)][t] += r[std::size_t(s)][t] / seeds;
        };
        add(0, per_surface_aucs<moe::SharedBottom<T>>(f, bottom_spec(1), false, train, test, epochs, std::uint64_t(seed)));
        add(1, per_surface_aucs<moe::MMoE<T>>(f, mmoe1, false, train, test, epochs, std::uint64_t(seed)));
        add(2, per_surface_aucs<moe::SharedBottom<T>>(f, bottom_spec(kSurfaces), true, train, test, epochs, std::uint64_t(seed)));
        add(3, per_surface_aucs<moe::MMoE<T>>(f, mmoe3, true, train, test, epochs, std::uint64_t(seed)));
        std::printf("  seed %d done (%.0f s)\n", seed, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::printf("\n## Test AUC per surface (mean of %d seed(s))\n\n", seeds);
    std::printf("| surface | task | SB alone | MMoE alone | gain alone | SB unified | MMoE unified | gain unified |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    double gain_alone = 0, gain_unified = 0;
    for (moe::Index s = 0; s < kSurfaces; ++s)
        for (std::size_t t = 0; t < 2; ++t) {
            const auto& r = results;
            const double ga = r[1][std::size_t(s)][t] - r[0][std::size_t(s)][t], gu = r[3][std::size_t(s)][t] - r[2][std::size_t(s)][t];
            gain_alone += ga / double(2 * kSurfaces), gain_unified += gu / double(2 * kSurfaces);
            std::printf("| %s | %s | %.4f | %.4f | %+.4f | %.4f | %.4f | %+.4f |\n", kSurfaceNames[s], kTasks[t].name.c_str(),
                        r[0][std::size_t(s)][t], r[1][std::size_t(s)][t], ga, r[2][std::size_t(s)][t], r[3][std::size_t(s)][t], gu);
        }
    std::printf("\nmean MMoE gain over SharedBottom: alone %+.4f, unified %+.4f AUC\n", gain_alone, gain_unified);

    // --- 2. calibration of the unified MMoE --------------------------------------------------------
    moe::MultiTaskLoss<T> loss(kTasks);
    moe::FeatureModel<moe::MMoE<T>> teacher(f, mmoe3, 1);
    moe::fit(teacher, loss, train, nullptr, fit_options(epochs, 1));
    const moe::SurfaceIds test_surfaces(test.surfaces);
    const auto raw = moe::predict_all(teacher, test.features, 4096, test_surfaces, false);
    std::filesystem::create_directories(out_dir);
    std::printf("\n## Calibration of the unified MMoE per surface (test ECE, 10 bins; ratio = sum of predictions / sum of labels)\n\n");
    std::printf("| surface | task | ECE raw | ECE Platt | ECE isotonic | ratio raw | ratio Platt | ratio isotonic |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    std::vector<std::vector<moe::Matrix<T>>> calibrated;
    for (moe::CalibrationMethod method : {moe::CalibrationMethod::platt, moe::CalibrationMethod::isotonic}) {
        teacher.set_calibration(moe::fit_calibration(teacher, valid, method));
        calibrated.push_back(moe::predict_all(teacher, test.features, 4096, test_surfaces));
    }
    const auto m_raw = moe::surface_calibration_metrics(kTasks, kSurfaces, raw, test.labels, test.mask, test.surfaces);
    const auto m_platt = moe::surface_calibration_metrics(kTasks, kSurfaces, calibrated[0], test.labels, test.mask, test.surfaces);
    const auto m_iso = moe::surface_calibration_metrics(kTasks, kSurfaces, calibrated[1], test.labels, test.mask, test.surfaces);
    for (std::size_t k = 0; k < m_raw.size(); ++k)
        std::printf("| %s | %s | %.4f | %.4f | %.4f | %.3f | %.3f | %.3f |\n", kSurfaceNames[m_raw[k].surface], m_raw[k].task.c_str(),
                    m_raw[k].ece, m_platt[k].ece, m_iso[k].ece, m_raw[k].ratio, m_platt[k].ratio, m_iso[k].ratio);
    for (moe::Index s = 0; s < kSurfaces; ++s) {
        std::vector<double> y;
        std::vector<moe::ReliabilityCurve> curves;
        const std::vector<double> p_raw = probabilities(raw[0], test.labels, test.mask, test.surfaces, s, 0, y);
        curves.push_back({"raw", moe::reliability_curve(p_raw, y, 10), {{214, 39, 40}}});
        const std::vector<double> p_cal = probabilities(calibrated[0][0], test.labels, test.mask, test.surfaces, s, 0, y);
        curves.push_back({"Platt", moe::reliability_curve(p_cal, y, 10), {{31, 119, 180}}});
        const std::string path = out_dir + "/reliability_surface" + std::to_string(s) + ".png";
        moe::write_reliability_plot(path, curves);
        std::printf("%s%s", s ? ", " : "\nreliability plots of click (red raw, blue Platt): ", path.c_str());
    }
    std::printf("\n");

    // --- 3. distillation into a quarter of the multiply-adds ---------------------------------------
    // The student: a smaller MMoE without the attention feature (the teacher's largest cost), trained
    // on labels only, or distilled offline from the teacher's predictions stored with the data.
    teacher.set_calibration({});  // the student learns from the teacher's own probabilities
    const moe::FeatureSpec fs = features(n_users, n_ads, false);
    const moe::MMoESpec small = mmoe_spec(kSurfaces, 3, 24, 12, 8);
    const double teacher_macs = mmoe_macs(mmoe3, f.width()) + attention_macs(train, 8), student_macs = mmoe_macs(small, fs.width());
    moe::FeatureData<T> student_train = without_attention(train);
    const auto teacher_preds = moe::predict_all(teacher, train.features, 4096, moe::SurfaceIds(train.surfaces));
    student_train.teacher.resize(2, train.size());
    for (std::size_t t = 0; t < 2; ++t) student_train.teacher.row(moe::Index(t)) = teacher_preds[t];
    const moe::FeatureData<T> student_test = without_attention(test);
    moe::FeatureModel<moe::MMoE<T>> labels_only(fs, small, 2), distilled(fs, small, 2);
    moe::fit(labels_only, loss, student_train, nullptr, fit_options(epochs, 2));
    moe::DistillationLoss<T> distill(kTasks, {{0.5, 2.0}, {0.5, 2.0}});
    moe::fit(distilled, distill, student_train, nullptr, fit_options(epochs, 2));
    const int reps = quick ? 5 : 51;
    std::printf("\n## Distillation into a student of %.0f%% of the teacher's multiply-adds (%.0f vs %.0f per sample)\n\n",
                100 * student_macs / teacher_macs, student_macs, teacher_macs);
    std::printf("| model | click AUC | conversion AUC | predict 300 (ms) |\n|---|---:|---:|---:|\n");
    const auto row = [&](const char* name, const moe::FeatureModel<moe::MMoE<T>>& m, const moe::FeatureData<T>& data) {
        const auto a = aucs(m, data);
        std::printf("| %s | %.4f | %.4f | %.3f |\n", name, a[0], a[1], 1e3 * predict_seconds(m, data, reps));
    };
    row("teacher (unified MMoE, attention)", teacher, test);
    row("student, labels only", labels_only, student_test);
    row("student, distilled (alpha 0.5, T 2)", distilled, student_test);
    std::printf("\ntotal time %.0f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return 0;
}
