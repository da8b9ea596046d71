// The MMoE paper's synthetic experiment (Ma et al., KDD 2018, section 4.3, figure 4): two regression
// tasks whose correlation p is controlled (moe::make_synthetic_tasks), learnt by shared-bottom, OMoE
// and MMoE models of the paper's sizes (d = 100; 8 experts of 16 units; towers of 8; a shared bottom
// of 113 units). For p in {0.5, 0.9, 1.0} and several seeds, records the test loss (the mean of the
// two tasks' MSE) after every epoch; writes the curves averaged over seeds as CSV and prints the
// final losses. tools/plot_task_correlation.gp draws the CSV (scripts/figures runs both).
//
// Usage: task_correlation [--seeds N] [--epochs N] [--csv PATH] [--fixed-sines] [--quick]
// The sines' alpha_i, beta_i are drawn from N(0, 1) (the generator's default); --fixed-sines takes
// alpha_i = i, beta_i = (i-1)^2 instead (see moe/data/synthetic.hpp for why that is not the default).
#include <moe/data/synthetic.hpp>
#include <moe/moe.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using T = float;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

constexpr moe::Index kDim = 100;

double test_loss(const std::vector<moe::TaskMetrics>& m) { return 0.5 * (m[0].rmse * m[0].rmse + m[1].rmse * m[1].rmse); }

/// Test loss after each epoch of one model.
template <class M, class Spec>
std::vector<double> curve(const Spec& spec, const moe::MultiTaskData<T>& train, const moe::MultiTaskData<T>& test,
                          int epochs, std::uint64_t seed) {
    moe::Model<M> model(spec, seed);
    moe::MultiTaskLoss<T> loss(model.tasks());
    moe::FitOptions o;
    o.epochs = epochs;
    o.batch_size = 128;
    o.lr = 1e-3;
    o.seed = seed;
    o.progress = moe::Progress::silent;
    std::vector<double> losses;
    o.on_epoch = [&](const moe::EpochReport&) {
        losses.push_back(test_loss(moe::evaluate(model, test)));
        return true;
    };
    moe::fit(model, loss, train, nullptr, o);
    return losses;
}

}  // namespace

int main(int argc, char** argv) {
    const auto start = Clock::now();
    int seeds = 5, epochs = 100;
    moe::Index train_size = 10000, test_size = 2000;
    std::string csv = "task_correlation.csv";
    auto preset = moe::SyntheticPreset::random_sines;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw moe::config_error("task_correlation: " + a + " needs a value");
            return argv[++i];
        };
        if (a == "--quick") seeds = 2, epochs = 5, train_size = 4000, test_size = 1000;
        else if (a == "--seeds") seeds = std::stoi(value());
        else if (a == "--epochs") epochs = std::stoi(value());
        else if (a == "--csv") csv = value();
        else if (a == "--fixed-sines") preset = moe::SyntheticPreset::fixed_sines;
        else {
            std::fprintf(stderr, "task_correlation: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    moe::MMoESpec mmoe;
    mmoe.input = kDim;
    mmoe.experts = 8;
    mmoe.expert_dim = 16;
    mmoe.tower_hidden = {8};
    mmoe.tasks = moe::synthetic_tasks();
    moe::SharedBottomSpec bottom;
    bottom.input = kDim;
    bottom.bottom_dim = 113;
    bottom.tower_hidden = {8};
    bottom.tasks = moe::synthetic_tasks();

    const char* models[] = {"shared-bottom", "OMoE", "MMoE"};
    const double correlations[] = {0.5, 0.9, 1.0};
    std::printf("%d seeds x %d epochs, %lld training and %lld test samples, d = %lld, %s, batch 128, Adam lr 1e-3\n",
                seeds, epochs, static_cast<long long>(train_size), static_cast<long long>(test_size),
                static_cast<long long>(kDim),
                preset == moe::SyntheticPreset::fixed_sines ? "alpha_i = i, beta_i = (i-1)^2" : "alpha, beta ~ N(0, 1)");
    // mean[p][model][epoch]
    std::vector<std::vector<std::vector<double>>> mean(3, std::vector<std::vector<double>>(3, std::vector<double>(std::size_t(epochs))));
    for (std::size_t pi = 0; pi < 3; ++pi) {
        for (int seed = 1; seed <= seeds; ++seed) {
            moe::SyntheticOptions o;
            o.dim = kDim;
            o.correlation = correlations[pi];
            o.preset = preset;
            o.samples = train_size;
            o.seed = std::uint64_t(seed);
            o.sample_seed = 1000 + std::uint64_t(seed);
            const auto train = moe::make_synthetic_tasks<T>(o);
            o.samples = test_size;
            o.sample_seed = 2000 + std::uint64_t(seed);
            const auto test = moe::make_synthetic_tasks<T>(o);
            const auto useed = std::uint64_t(seed);
            const std::vector<double> curves[] = {curve<moe::SharedBottom<T>>(bottom, train, test, epochs, useed),
                                                  curve<moe::OMoE<T>>(mmoe, train, test, epochs, useed),
                                                  curve<moe::MMoE<T>>(mmoe, train, test, epochs, useed)};
            for (std::size_t m = 0; m < 3; ++m)
                for (std::size_t e = 0; e < std::size_t(epochs); ++e) mean[pi][m][e] += curves[m][e] / seeds;
            std::printf("p = %.1f seed %d: final test loss shared-bottom %.4f, OMoE %.4f, MMoE %.4f (%.0f s so far)\n",
                        correlations[pi], seed, curves[0].back(), curves[1].back(), curves[2].back(), seconds_since(start));
            std::fflush(stdout);
        }
    }
    std::ofstream out(csv);
    out << "epoch";
    for (double p : correlations)
        for (const char* m : models) out << "," << m << " p=" << p;
    out << "\n";
    for (std::size_t e = 0; e < std::size_t(epochs); ++e) {
        out << e + 1;
        for (std::size_t pi = 0; pi < 3; ++pi)
            for (std::size_t m = 0; m < 3; ++m) out << "," << mean[pi][m][e];
        out << "\n";
    }
    std::printf("\nFinal test loss (mean of the two tasks' MSE, averaged over %d seeds):\n\n| model | p = 0.5 | p = 0.9 | p = 1.0 |\n"
                "|---|---|---|---|\n", seeds);
    for (std::size_t m = 0; m < 3; ++m)
        std::printf("| %s | %.4f | %.4f | %.4f |\n", models[m], mean[0][m].back(), mean[1][m].back(), mean[2][m].back());
    std::printf("\ncurves written to %s\ntotal %.1f s\n", csv.c_str(), seconds_since(start));
    return 0;
}
