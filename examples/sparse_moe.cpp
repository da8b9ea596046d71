// Sparse top-k routing on a task that needs a mixture: inputs come from C clusters, and each
// cluster has its own nonlinear map to the target (a mixture of regressions). One small expert can
// learn one cluster's map; a single shared network of the same size cannot hold all of them.
//
// Trains three SparseMoE layers with the same 8 experts: dense (every expert on every token,
// softmax-weighted), top-1 (Switch, raw probability) and top-2 (renormalised, Mixtral), the sparse
// ones with the Switch load-balancing loss. Prints loss curves, the time per epoch, the expert load
// table, and which expert each cluster's tokens go to (the experts specialise).
//
// Usage: sparse_moe [--epochs N] [--quick]
#include <moe/moe.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using T = float;
constexpr moe::Index kDim = 16, kClusters = 8, kExperts = 8;

struct Task {
    moe::Matrix<double> centres;             // kDim x kClusters
    std::vector<moe::Matrix<double>> maps;   // per cluster, kDim x kDim
};

Task make_task(moe::Rng& rng) {
    Task t;
    t.centres.resize(kDim, kClusters);
    for (moe::Index i = 0; i < t.centres.size(); ++i) t.centres.data()[i] = 2.5 * rng.normal();
    for (moe::Index c = 0; c < kClusters; ++c) {
        moe::Matrix<double> w(kDim, kDim);
        for (moe::Index i = 0; i < w.size(); ++i) w.data()[i] = rng.normal() / std::sqrt(double(kDim)) * 2;
        t.maps.push_back(w);
    }
    return t;
}

/// n tokens: x = centre of a random cluster + N(0, 0.5^2); y = tanh(W_c (x - centre_c)) per cluster.
void sample(const Task& task, moe::Index n, moe::Rng& rng, moe::Matrix<T>& x, moe::Matrix<T>& y,
            std::vector<int>& cluster) {
    x.resize(kDim, n);
    y.resize(kDim, n);
    cluster.resize(std::size_t(n));
    for (moe::Index j = 0; j < n; ++j) {
        const int c = int(rng.below(kClusters));
        cluster[std::size_t(j)] = c;
        moe::Vector<double> local(kDim);
        for (moe::Index i = 0; i < kDim; ++i) local(i) = 0.5 * rng.normal();
        const moe::Vector<double> target = (task.maps[std::size_t(c)] * local).array().tanh().matrix();
        for (moe::Index i = 0; i < kDim; ++i) {
            x(i, j) = T(task.centres(i, c) + local(i));
            y(i, j) = T(target(i));
        }
    }
}

struct Run {
    std::string name;
    moe::SparseMoESpec spec;
    std::vector<double> curve;
    double seconds = 0, test_loss = 0;
};

}  // namespace

int main(int argc, char** argv) {
    int epochs = 30;
    moe::Index n_train = 32768;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) epochs = 4, n_train = 4096;
        else if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: sparse_moe [--epochs N] [--quick]\n");
            return 2;
        }
    }
    const auto start = std::chrono::steady_clock::now();
    moe::Rng rng(42);
    const Task task = make_task(rng);
    moe::Matrix<T> x, y, xt, yt;
    std::vector<int> cl, clt;
    sample(task, n_train, rng, x, y, cl);
    sample(task, 8192, rng, xt, yt, clt);
    std::printf("mixture of %ld regressions in %ld dimensions: %ld train / %ld test tokens, %ld experts of %ld -> 32 -> %ld\n",
                long(kClusters), long(kDim), long(x.cols()), long(xt.cols()), long(kExperts), long(kDim), long(kDim));

    std::vector<Run> runs(3);
    for (auto& r : runs) {
        r.spec.dim = kDim;
        r.spec.ffn = 32;
        r.spec.experts = kExperts;
    }
    runs[0].name = "dense (all 8)";
    runs[0].spec.k = kExperts;
    runs[1].name = "top-1 (Switch)";
    runs[1].spec.k = 1;
    runs[1].spec.renormalize = false;
    runs[1].spec.balance_coef = 0.01;
    runs[2].name = "top-2 (Mixtral)";
    runs[2].spec.k = 2;
    runs[2].spec.balance_coef = 0.01;

    const moe::Index batch = 256;
    std::vector<moe::Model<moe::SparseMoE<T>>> models;
    for (auto& r : runs) models.emplace_back(r.spec, 1);
    moe::MSELoss<T> mse;
    moe::Matrix<T> xb(kDim, batch), yb(kDim, batch);
    for (std::size_t m = 0; m < runs.size(); ++m) {
        auto& model = models[m];
        moe::Adam<T> adam({3e-3});
        moe::Rng shuffle(7);
        std::vector<moe::Index> order(std::size_t(x.cols()));
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = moe::Index(i);
        const auto t0 = std::chrono::steady_clock::now();
        for (int e = 0; e < epochs; ++e) {
            moe::shuffle(order.begin(), order.end(), shuffle);
            double sum = 0;
            moe::Index batches = 0;
            for (moe::Index b = 0; b + batch <= x.cols(); b += batch, ++batches) {
                for (moe::Index j = 0; j < batch; ++j) {
                    xb.col(j) = x.col(order[std::size_t(b + j)]);
                    yb.col(j) = y.col(order[std::size_t(b + j)]);
                }
                model.zero_grad();
                sum += mse.forward(model.forward(xb), yb) + model.aux_loss();
                model.backward(mse.backward());
                adam.step(model.params());
            }
            runs[m].curve.push_back(sum / double(batches));
        }
        runs[m].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        model.set_training(false);
        runs[m].test_loss = mse.forward(model.forward(xt), yt);
    }

    std::printf("\ntraining loss (MSE + aux) per epoch:\n%6s", "epoch");
    for (const auto& r : runs) std::printf(" %16s", r.name.c_str());
    std::printf("\n");
    for (int e = 0; e < epochs; ++e) {
        if (epochs > 10 && e % 3 != 0 && e + 1 != epochs) continue;
        std::printf("%6d", e + 1);
        for (const auto& r : runs) std::printf(" %16.4f", r.curve[std::size_t(e)]);
        std::printf("\n");
    }
    std::printf("%6s", "test");
    for (const auto& r : runs) std::printf(" %16.4f", r.test_loss);
    std::printf("  (MSE on the test set)\n%6s", "s/ep");
    for (const auto& r : runs) std::printf(" %16.3f", r.seconds / epochs);
    std::printf("  (seconds per epoch)\n");

    for (std::size_t m = 1; m < runs.size(); ++m) {
        auto& model = models[m];
        model.forward(xt);
        std::printf("\n== %s on the test set\n%s", runs[m].name.c_str(), model.stats().table().c_str());
        // Which expert each cluster's tokens choose first: specialised experts show one dominant column.
        std::vector<std::vector<int>> counts(kClusters, std::vector<int>(kExperts, 0));
        std::vector<int> totals(kClusters, 0);
        for (moe::Index t = 0; t < xt.cols(); ++t) {
            ++counts[std::size_t(clt[std::size_t(t)])][std::size_t(model.choice(0, t))];
            ++totals[std::size_t(clt[std::size_t(t)])];
        }
        std::printf("share of each cluster's tokens whose first choice is each expert:\ncluster");
        for (moe::Index e = 0; e < kExperts; ++e) std::printf("  exp%ld", long(e));
        std::printf("   top share\n");
        double purity = 0;
        for (moe::Index c = 0; c < kClusters; ++c) {
            std::printf("%7ld", long(c));
            int best = 0;
            for (moe::Index e = 0; e < kExperts; ++e) {
                const int n = counts[std::size_t(c)][std::size_t(e)];
                best = std::max(best, n);
                std::printf(" %5.2f", double(n) / std::max(1, totals[std::size_t(c)]));
            }
            const double share = double(best) / std::max(1, totals[std::size_t(c)]);
            purity += share / kClusters;
            std::printf("   %5.2f\n", share);
        }
        std::printf("mean top share %.2f (1.00: each cluster goes to one expert; %.2f: spread evenly)\n", purity,
                    1.0 / double(kExperts));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("\ntotal time %.1f s\n", seconds);
    return 0;
}
