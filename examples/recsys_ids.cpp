// The toy recommender with ID features: who the user is and what the item is decide part of every
// label (each user and item has latent factors and a bias of its own, drawn per ID: the user's
// activity, the item's popularity), and the dense features carry neither. The same MMoE is trained twice with the same budget of steps: on the
// dense features alone, and behind an input block of ID features (user_id, item_id, the item's
// category, and the user's 10 most recent items mean-pooled from the item table, which item_id
// shares). Prints the test AUCs of both side by side.
//
// Usage: recsys_ids [--epochs N] [--quick]
#include <moe/moe.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using T = float;
constexpr moe::Index kLatent = 8, kCategories = 6, kHistory = 10, kDense = 6;

struct World {
    moe::Matrix<double> users, items;              // latent factors per ID, kLatent x count
    std::vector<double> bait_taste, quality_taste;  // per user
    std::vector<double> activity;                   // per user: how much the user clicks and likes, per ID
    std::vector<double> appeal, quality;            // per item
    std::vector<double> popularity;                 // per item: a pull of its own, per ID
    std::vector<int> clickbait, category;
    std::vector<std::int64_t> history;              // per user, kHistory recent items (flat)
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
        w.activity.push_back(0.8 * rng.normal());
    }
    for (moe::Index i = 0; i < n_items; ++i) {
        const int cb = rng.uniform() < 0.2;
        w.clickbait.push_back(cb);
        w.appeal.push_back(rng.normal() * 0.5 + (cb ? 1.5 : 0.0));
        w.quality.push_back(rng.normal() * 0.7 - (cb ? 1.2 : 0.0));
        w.category.push_back(int(rng.below(kCategories)));
        w.popularity.push_back(0.8 * rng.normal());
    }
    // A user's history: items the user liked, so that it tells about the user's factors. Each is the
    // best of 20 random items by affinity.
    for (moe::Index u = 0; u < n_users; ++u)
        for (moe::Index h = 0; h < kHistory; ++h) {
            moe::Index best = 0;
            double best_affinity = -1e300;
            for (int c = 0; c < 20; ++c) {
                const auto i = moe::Index(rng.below(std::uint64_t(n_items)));
                const double a = w.users.col(u).dot(w.items.col(i));
                if (a > best_affinity) best_affinity = a, best = i;
            }
            w.history.push_back(best);
        }
    return w;
}

const std::vector<moe::TaskSpec> kTasks = {moe::binary_task("click"), moe::regression_task("watch"), moe::binary_task("like")};

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

/// Impressions: who saw what, the dense features, the labels and their masks.
struct Impressions {
    std::vector<moe::Index> user, item;
    moe::Matrix<T> dense, labels, mask;
    moe::Index size() const { return moe::Index(user.size()); }
};

/// Dense features: the user's two tastes (noisy), the item's appeal, a noisy quality signal, a weak
/// clickbait hint and a noise feature. Labels as in train_recsys: click from affinity and appeal,
/// watch time and like (after a click) from affinity and quality; click and like also from the
/// user's activity and the item's popularity.
Impressions make_impressions(const World& w, moe::Index n, moe::Rng& rng) {
    Impressions d;
    d.dense.resize(kDense, n);
    d.labels.resize(moe::Index(kTasks.size()), n);
    d.mask.resize(moe::Index(kTasks.size()), n);
    for (moe::Index j = 0; j < n; ++j) {
        const auto u = moe::Index(rng.below(std::uint64_t(w.users.cols())));
        const auto i = moe::Index(rng.below(std::uint64_t(w.items.cols())));
        d.user.push_back(u);
        d.item.push_back(i);
        const auto uu = std::size_t(u), ii = std::size_t(i);
        d.dense.col(j) << T(w.bait_taste[uu] + 0.2 * rng.normal()), T(w.quality_taste[uu] + 0.2 * rng.normal()), T(w.appeal[ii]),
            T(w.quality[ii] + 0.5 * rng.normal()), T(rng.uniform() < (w.clickbait[ii] ? 0.6 : 0.15)), T(rng.normal());
        const double affinity = w.users.col(u).dot(w.items.col(i));
        const double q = w.quality[ii] * w.quality_taste[uu], a = w.appeal[ii] * w.bait_taste[uu];
        const double own = w.activity[uu] + w.popularity[ii];  // known only through the IDs
        const bool click = rng.uniform() < sigmoid(-1.0 + 1.5 * affinity + 1.3 * a + own);
        d.labels(0, j) = T(click);
        d.labels(1, j) = T(click ? std::max(0.0, 2.0 + 1.2 * affinity + 1.5 * q + 0.5 * rng.normal()) : 0.0);
        d.labels(2, j) = T(rng.uniform() < sigmoid(-0.5 + 1.5 * affinity + 1.5 * q + own));
        d.mask(0, j) = d.mask(1, j) = 1;
        d.mask(2, j) = T(click);
    }
    return d;
}

/// The samples order[begin, end) of d as a batch (buffers reused between calls).
void gather(const World& w, const Impressions& d, const std::vector<moe::Index>& order, moe::Index begin, moe::Index end,
            bool ids, moe::FeatureBatch<T>& b, moe::Matrix<T>& y, moe::Matrix<T>& m) {
    const moe::Index n = end - begin;
    b.dense.resize(kDense, n);
    y.resize(d.labels.rows(), n);
    m.resize(d.mask.rows(), n);
    auto one_hot = [&](const char* name) -> moe::Bags<T>& {
        moe::Bags<T>& bags = b.sparse[name];
        bags.ids.clear();
        bags.offsets.assign(1, 0);
        return bags;
    };
    moe::Bags<T>* user = ids ? &one_hot("user_id") : nullptr;
    moe::Bags<T>* item = ids ? &one_hot("item_id") : nullptr;
    moe::Bags<T>* category = ids ? &one_hot("category") : nullptr;
    moe::Bags<T>* recent = ids ? &one_hot("recent_items") : nullptr;
    for (moe::Index k = 0; k < n; ++k) {
        const moe::Index j = order[std::size_t(begin + k)];
        b.dense.col(k) = d.dense.col(j);
        y.col(k) = d.labels.col(j);
        m.col(k) = d.mask.col(j);
        if (!ids) continue;
        const auto u = std::size_t(d.user[std::size_t(j)]), i = std::size_t(d.item[std::size_t(j)]);
        auto push = [](moe::Bags<T>* bags, std::int64_t id) { bags->ids.push_back(id); };
        push(user, std::int64_t(u));
        push(item, std::int64_t(i));
        push(category, w.category[i]);
        for (moe::Index h = 0; h < kHistory; ++h) push(recent, w.history[u * std::size_t(kHistory) + std::size_t(h)]);
        for (moe::Bags<T>* bags : {user, item, category, recent}) bags->offsets.push_back(std::int64_t(bags->ids.size()));
    }
}

/// Trains model (dense Adam + SparseAdam on the tables) and returns the test metrics per task.
std::vector<double> train_and_test(moe::FeatureModel<moe::MMoE<T>>& model, bool ids, const World& w, const Impressions& train,
                                   const Impressions& test, int epochs) {
    moe::AdamOptions ao;
    ao.lr = 2e-3;
    moe::Adam<T> adam(ao);
    moe::SparseAdamOptions so;
    so.lr = 5e-3;
    moe::TableOptimizer<T> tables(model.input(), so);
    moe::MultiTaskLoss<T> loss(kTasks, {{}, {moe::LossKind::huber, 0.5, 1.0}, {}});
    std::vector<moe::Index> order(std::size_t(train.size()));
    for (std::size_t j = 0; j < order.size(); ++j) order[j] = moe::Index(j);
    moe::Rng rng(1);
    moe::FeatureBatch<T> batch;
    moe::Matrix<T> y, m;
    const moe::Index batch_size = 512;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        moe::shuffle(order.begin(), order.end(), rng);
        model.train();
        double total = 0;
        moe::Index batches = 0;
        for (moe::Index begin = 0; begin + 1 < train.size(); begin += batch_size, ++batches) {
            gather(w, train, order, begin, std::min(train.size(), begin + batch_size), ids, batch, y, m);
            total += double(loss.forward(model.forward(batch), y, m));
            model.zero_grad();
            model.backward(loss.backward());
            moe::clip_grad_norm(model.params(), 5.0);
            adam.step(model.params());
            tables.step(model.input());
        }
        std::printf("  epoch %d/%d  loss %.4f\n", epoch, epochs, total / double(batches));
    }
    model.eval();
    std::vector<moe::Index> all(std::size_t(test.size()));
    for (std::size_t j = 0; j < all.size(); ++j) all[j] = moe::Index(j);
    gather(w, test, all, 0, test.size(), ids, batch, y, m);
    moe::FeatureWorkspace<T> ws;
    const auto& pred = model.predict(batch, ws);
    std::vector<double> metrics;
    for (std::size_t t = 0; t < kTasks.size(); ++t) {
        const auto row = moe::Index(t);
        if (kTasks[t].kind == moe::TaskKind::binary) {
            const moe::Matrix<T> mask_row = m.row(row), label_row = y.row(row);
            metrics.push_back(moe::auc<T>(pred[t], label_row, mask_row).value_or(NAN));
        } else {
            metrics.push_back(std::sqrt((pred[t] - y.row(row)).squaredNorm() / double(y.cols())));
        }
    }
    return metrics;
}

}  // namespace

int main(int argc, char** argv) {
    int epochs = 4;
    moe::Index n_train = 200000, n_test = 40000;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) epochs = 1, n_train = 10000, n_test = 5000;
        else if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--epochs N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    const auto start = std::chrono::steady_clock::now();
    moe::Rng rng(7);
    const moe::Index n_users = 3000, n_items = 2000;
    const World world = make_world(n_users, n_items, rng);
    const Impressions train = make_impressions(world, n_train, rng), test = make_impressions(world, n_test, rng);
    std::printf("toy recommender with IDs: %ld users, %ld items, %ld train / %ld test impressions\n", long(n_users),
                long(n_items), long(train.size()), long(test.size()));

    moe::MMoESpec spec;  // input 0: the features' width
    spec.experts = 8;
    spec.expert_hidden = {48};
    spec.expert_dim = 24;
    spec.tower_hidden = {32};
    spec.tasks = kTasks;

    moe::FeatureSpec dense_only;
    dense_only.dense = kDense;
    moe::FeatureSpec with_ids = dense_only;
    with_ids.add_table("users", n_users, 8).add_table("items", n_items, 8).add_table("categories", kCategories, 4);
    with_ids.add_feature("user_id", "users")
        .add_feature("item_id", "items")
        .add_feature("category", "categories")
        .add_feature("recent_items", "items", moe::PoolingMode::mean, kHistory);

    std::printf("\n== MMoE on the %ld dense features\n", long(kDense));
    moe::FeatureModel<moe::MMoE<T>> plain(dense_only, spec, 1);
    const auto plain_metrics = train_and_test(plain, false, world, train, test, epochs);
    std::printf("\n== the same MMoE with ID features (user, item, category, 10 recent items): input %ld\n",
                long(with_ids.width()));
    moe::FeatureModel<moe::MMoE<T>> idm(with_ids, spec, 1);
    const auto id_metrics = train_and_test(idm, true, world, train, test, epochs);

    std::printf("\ntest set (%ld impressions; like over the clicked ones):\n%-6s %-6s %12s %12s\n", long(test.size()), "task",
                "metric", "dense only", "with IDs");
    for (std::size_t t = 0; t < kTasks.size(); ++t)
        std::printf("%-6s %-6s %12.4f %12.4f\n", kTasks[t].name.c_str(), kTasks[t].kind == moe::TaskKind::binary ? "AUC" : "RMSE",
                    plain_metrics[t], id_metrics[t]);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("\ntotal time %.1f s\n", seconds);
    return 0;
}
