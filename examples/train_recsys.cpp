// The recommender demo: a seeded toy data set of users and items with latent factors, where
// clickbait items attract clicks but lose watch time and post-click satisfaction, so the tasks
// conflict. Trains a shared-bottom model and an MMoE side by side with the same budget, prints
// per-epoch metrics, a final table per task, the MMoE's gate weights, and the top 5 of 300 ranked
// candidates for one user with every task's prediction.
//
// Usage: train_recsys [--epochs N] [--quick]
#include <moe/moe.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace {

using T = float;
constexpr moe::Index kLatent = 8, kCategories = 6;

struct World {
    moe::Matrix<double> users, items;  // latent factors, kLatent x count
    std::vector<double> bait_taste, quality_taste;  // per user: pull of thumbnails, care for quality
    std::vector<double> appeal, quality;            // per item
    std::vector<int> clickbait, category;
};

World make_world(moe::Index n_users, moe::Index n_items, moe::Rng& rng) {
    World w;
    w.users.resize(kLatent, n_users);
    w.items.resize(kLatent, n_items);
    for (moe::Index i = 0; i < w.users.size(); ++i) w.users.data()[i] = rng.normal() / std::sqrt(double(kLatent)) * 1.6;
    for (moe::Index i = 0; i < w.items.size(); ++i) w.items.data()[i] = rng.normal() / std::sqrt(double(kLatent)) * 1.6;
    for (moe::Index u = 0; u < n_users; ++u) {
        w.bait_taste.push_back(rng.uniform(-0.5, 2.0));
        w.quality_taste.push_back(rng.uniform(-0.5, 2.0));
    }
    for (moe::Index i = 0; i < n_items; ++i) {
        const int cb = rng.uniform() < 0.2;
        w.clickbait.push_back(cb);
        w.appeal.push_back(rng.normal() * 0.5 + (cb ? 1.5 : 0.0));   // thumbnails of clickbait shine
        w.quality.push_back(rng.normal() * 0.7 - (cb ? 1.2 : 0.0));  // and the content does not
        w.category.push_back(int(rng.below(kCategories)));
    }
    return w;
}

constexpr moe::Index kFeatures = 2 * kLatent + 6 + kCategories;

/// Features of a (user, item) impression: noisy user and item factors (their match must be learned),
/// the user's two tastes, the item's appeal, a noisy quality signal, a weak clickbait hint
/// ("title in caps"), a noise feature, and the category.
void features(const World& w, moe::Index u, moe::Index i, moe::Rng& rng, T* x) {
    for (moe::Index k = 0; k < kLatent; ++k) {
        x[k] = T(w.users(k, u) + 0.1 * rng.normal());
        x[kLatent + k] = T(w.items(k, i) + 0.1 * rng.normal());
    }
    const auto ii = std::size_t(i), uu = std::size_t(u);
    T* f = x + 2 * kLatent;
    f[0] = T(w.bait_taste[uu] + 0.2 * rng.normal());
    f[1] = T(w.quality_taste[uu] + 0.2 * rng.normal());
    f[2] = T(w.appeal[ii]);
    f[3] = T(w.quality[ii] + 0.5 * rng.normal());
    f[4] = T(rng.uniform() < (w.clickbait[ii] ? 0.6 : 0.15));
    f[5] = T(rng.normal());
    for (int c = 0; c < kCategories; ++c) f[6 + c] = T(w.category[ii] == c);
}

const std::vector<moe::TaskSpec> kTasks = {moe::binary_task("click"), moe::regression_task("watch"),
                                            moe::binary_task("like"), moe::binary_task("finish"),
                                            moe::binary_task("dislike")};

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

/// Labels of one impression. Click follows affinity and the appeal as the user's taste for
/// thumbnails weighs it; watch time (minutes, 0 without a click) and the post-click tasks follow
/// affinity and quality as the user's taste for quality weighs it, which clickbait lacks.
void labels(const World& w, moe::Index u, moe::Index i, moe::Rng& rng, T* y, T* m) {
    const auto ii = std::size_t(i), uu = std::size_t(u);
    const double affinity = w.users.col(u).dot(w.items.col(i));
    const double q = w.quality[ii] * w.quality_taste[uu], a = w.appeal[ii] * w.bait_taste[uu];
    const bool click = rng.uniform() < sigmoid(-1.0 + 1.5 * affinity + 1.3 * a);
    const double watch = click ? std::max(0.0, 2.0 + 1.2 * affinity + 1.5 * q + 0.5 * rng.normal()) : 0.0;
    y[0] = T(click);
    y[1] = T(watch);
    y[2] = T(rng.uniform() < sigmoid(-0.5 + 1.5 * affinity + 1.5 * q));
    y[3] = T(rng.uniform() < sigmoid(0.3 + 2.0 * q - 0.7 * a));
    y[4] = T(rng.uniform() < sigmoid(-2.0 - 1.5 * q - affinity));
    m[0] = m[1] = 1;  // click and watch time exist for every impression
    m[2] = m[3] = m[4] = T(click);  // like, finish, dislike only after a click
}

moe::MultiTaskData<T> make_data(const World& w, moe::Index n, moe::Rng& rng) {
    moe::MultiTaskData<T> d;
    const auto n_tasks = moe::Index(kTasks.size());
    d.x.resize(kFeatures, n);
    d.labels.resize(n_tasks, n);
    d.mask.resize(n_tasks, n);
    for (moe::Index j = 0; j < n; ++j) {
        const auto u = moe::Index(rng.below(std::uint64_t(w.users.cols())));
        const auto i = moe::Index(rng.below(std::uint64_t(w.items.cols())));
        features(w, u, i, rng, d.x.col(j).data());
        labels(w, u, i, rng, d.labels.col(j).data(), d.mask.col(j).data());
    }
    return d;
}

void print_table(const std::vector<moe::TaskMetrics>& sb, const std::vector<moe::TaskMetrics>& mmoe) {
    std::printf("\n%-9s %-8s %14s %14s %10s\n", "task", "metric", "shared-bottom", "MMoE", "MMoE - SB");
    for (std::size_t t = 0; t < sb.size(); ++t) {
        const bool bin = sb[t].kind == moe::TaskKind::binary;
        const double a = bin ? sb[t].auc.value_or(NAN) : sb[t].rmse, b = bin ? mmoe[t].auc.value_or(NAN) : mmoe[t].rmse;
        std::printf("%-9s %-8s %14.4f %14.4f %+10.4f%s\n", sb[t].task.c_str(), bin ? "AUC" : "RMSE", a, b, b - a,
                    (bin ? b > a : b < a) ? "  (MMoE better)" : "");
    }
}

}  // namespace

int main(int argc, char** argv) {
    int epochs = 20;
    moe::Index n_train = 200000;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) epochs = 2, n_train = 20000;
        else if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--epochs N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    const auto start = std::chrono::steady_clock::now();
    moe::Rng rng(7);
    const World world = make_world(3000, 2000, rng);
    const auto train = make_data(world, n_train, rng), valid = make_data(world, 20000, rng),
               test = make_data(world, 40000, rng);
    std::printf("toy recommender: %ld features, %ld train / %ld test impressions, tasks click, watch (minutes), "
                "like/finish/dislike (post-click)\n", long(kFeatures), long(train.size()), long(test.size()));

    moe::FitOptions opt;
    opt.epochs = epochs;
    opt.batch_size = 512;
    opt.lr = 2e-3;
    opt.cosine_lr = true;
    opt.clip_norm = 5.0;
    opt.seed = 1;
    moe::MultiTaskLoss<T> loss(kTasks, {{}, {moe::LossKind::huber, 0.5, 1.0}, {}, {}, {}});

    // The same budget: both models have about the same number of parameters.
    moe::SharedBottomSpec sb_spec;
    sb_spec.input = kFeatures;
    sb_spec.bottom_hidden = {192};
    sb_spec.bottom_dim = 64;
    sb_spec.tower_hidden = {32};
    sb_spec.tasks = kTasks;
    moe::Model<moe::SharedBottom<T>> sb(sb_spec, 1);

    moe::MMoESpec mmoe_spec;
    mmoe_spec.input = kFeatures;
    mmoe_spec.experts = 8;
    mmoe_spec.expert_hidden = {48};
    mmoe_spec.expert_dim = 24;
    mmoe_spec.tower_hidden = {32};
    mmoe_spec.tasks = kTasks;
    moe::Model<moe::MMoE<T>> mmoe(mmoe_spec, 1);
    std::printf("parameters: shared-bottom %ld, MMoE %ld\n", long(sb.params().size()), long(mmoe.params().size()));

    std::printf("\n== shared-bottom\n");
    moe::fit(sb, loss, train, &valid, opt);
    std::printf("\n== MMoE (%ld experts)\n", long(mmoe_spec.experts));
    moe::fit(mmoe, loss, train, &valid, opt);

    const auto sb_test = moe::evaluate(sb, test), mmoe_test = moe::evaluate(mmoe, test);
    std::printf("\ntest set (%ld impressions; post-click tasks over the clicked ones):", long(test.size()));
    print_table(sb_test, mmoe_test);

    const moe::GateReport gates = moe::inspect_gates(mmoe, test.x);
    std::printf("\nMMoE gate weights per task (mean over the test set):\n%s", gates.table().c_str());
    for (const auto& w : gates.warnings) std::printf("warning: %s\n", w.c_str());

    // Ranking: 300 candidate items for one user, scored by weighted task predictions.
    const moe::Index user = 42, n_candidates = 300;
    moe::Matrix<T> candidates(kFeatures, n_candidates);
    for (moe::Index c = 0; c < n_candidates; ++c) features(world, user, c, rng, candidates.col(c).data());
    const std::map<std::string, double> weights{{"click", 1.0}, {"watch", 0.3}, {"like", 1.0}, {"finish", 0.5},
                                                {"dislike", -2.0}};
    const auto ranking = moe::rank_candidates(mmoe, candidates, weights);
    std::printf("\ntop 5 of %ld candidates for user %ld (score = click + 0.3 watch + like + 0.5 finish - 2 dislike):\n",
                long(n_candidates), long(user));
    std::printf("%5s %6s %8s %7s %7s %7s %7s %8s %10s\n", "item", "score", "click", "watch", "like", "finish", "dislike",
                "quality", "clickbait");
    for (std::size_t r = 0; r < 5; ++r) {
        const moe::Index i = ranking.order[r];
        const auto& p = ranking.predictions;
        std::printf("%5ld %6.3f %8.3f %7.2f %7.3f %7.3f %7.3f %8.2f %10s\n", long(i), ranking.scores[std::size_t(i)],
                    double(p[0](0, i)), double(p[1](0, i)), double(p[2](0, i)), double(p[3](0, i)), double(p[4](0, i)),
                    world.quality[std::size_t(i)], world.clickbait[std::size_t(i)] ? "yes" : "no");
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("\ntotal time %.1f s\n", seconds);
    return 0;
}
