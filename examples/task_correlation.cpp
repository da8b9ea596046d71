// The MMoE paper's synthetic experiment (Ma et al., KDD 2018, sections 4.2 and 5.3-5.4, figures 4
// and 5), following its protocol: two regression tasks whose correlation p is controlled
// (moe::make_synthetic_tasks), learnt by shared-bottom, OMoE and MMoE models of the paper's sizes
// (d = 100; 8 experts of one layer of 16 units; towers of one layer of 8; a shared bottom of 113
// units). The sines' alpha_i, beta_i (m = 10) are fixed for the whole experiment; every run draws
// new task weights (u1, u2), new samples and a new initialisation. Recorded per run: the training
// loss after every epoch (the mean of the batches' losses, as the paper's figure 4 plots the
// training loss) and the final test loss.
//
// Output: the mean training-loss curves (CSV, figure 4), the final training losses of every run
// (CSV, the histograms of the paper's figure 5 on trainability), a table, and which of the paper's
// findings hold. tools/plot_task_correlation.gp draws both CSVs (scripts/papers runs everything).
//
// Usage: task_correlation [--runs N] [--epochs N] [--c C] [--lr LR] [--csv PREFIX] [--quick]
// Constants not stated in the paper and chosen here: c = 1 (the weights' scale), alpha_i, beta_i ~
// N(0, 1) drawn once from seed 2018, noise sd 0.1 (the paper's N(0, 0.01) as a variance), 10,000
// training samples, batch 128, Adam with lr 1e-3 (the paper grid-searched {1e-4, 1e-3, 1e-2}), and
// the loss: the mean of the two tasks' MSE.
#include <moe/data/synthetic.hpp>
#include <moe/moe.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using T = float;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

constexpr moe::Index kDim = 100;
constexpr std::uint64_t kSinesSeed = 2018;

struct Run {
    std::vector<double> train_curve;  // mean training loss per epoch
    double test_loss = 0;
};

double test_loss(const std::vector<moe::TaskMetrics>& m) { return 0.5 * (m[0].rmse * m[0].rmse + m[1].rmse * m[1].rmse); }

template <class M, class Spec>
Run train_one(const Spec& spec, const moe::MultiTaskData<T>& train, const moe::MultiTaskData<T>& test, int epochs,
              double lr, std::uint64_t seed) {
    moe::Model<M> model(spec, seed);
    moe::MultiTaskLoss<T> loss(model.tasks());
    moe::FitOptions o;
    o.epochs = epochs;
    o.batch_size = 128;
    o.lr = lr;
    o.seed = seed;
    o.progress = moe::Progress::silent;
    Run run;
    o.on_epoch = [&](const moe::EpochReport& r) {
        run.train_curve.push_back(0.5 * r.train_loss);  // the loss is the sum of the two tasks' MSE
        return true;
    };
    moe::fit(model, loss, train, nullptr, o);
    run.test_loss = test_loss(moe::evaluate(model, test));
    return run;
}

double quantile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    const double pos = q * double(v.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}
double mean(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
}
double stddev(const std::vector<double>& v) {
    const double m = mean(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / double(v.size() > 1 ? v.size() - 1 : 1));
}

}  // namespace

int main(int argc, char** argv) {
    const auto start = Clock::now();
    int runs = 50, epochs = 60;
    double c = 1.0, lr = 1e-3;
    moe::Index train_size = 10000, test_size = 2000;
    std::string prefix = "task_correlation";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw moe::config_error("task_correlation: " + a + " needs a value");
            return argv[++i];
        };
        if (a == "--quick") runs = 2, epochs = 4, train_size = 3000, test_size = 500;
        else if (a == "--runs") runs = std::stoi(value());
        else if (a == "--epochs") epochs = std::stoi(value());
        else if (a == "--c") c = std::stod(value());
        else if (a == "--lr") lr = std::stod(value());
        else if (a == "--csv") prefix = value();
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
    std::printf("%d runs x %d epochs per model and p; %lld training and %lld test samples; d = %lld, m = 10 sines "
                "(alpha, beta ~ N(0, 1) from seed %llu, fixed), c = %g, noise sd 0.1; batch 128, Adam lr %g; %d threads\n",
                runs, epochs, static_cast<long long>(train_size), static_cast<long long>(test_size),
                static_cast<long long>(kDim), static_cast<unsigned long long>(kSinesSeed), c, lr, moe::max_threads());
    // result[p][model][run]
    std::vector<std::vector<std::vector<Run>>> result(3, std::vector<std::vector<Run>>(3));
    for (std::size_t pi = 0; pi < 3; ++pi) {
        for (int r = 1; r <= runs; ++r) {
            moe::SyntheticOptions o;
            o.dim = kDim;
            o.c = c;
            o.noise = 0.1;
            o.correlation = correlations[pi];
            o.sines_seed = kSinesSeed;
            o.samples = train_size;
            o.seed = std::uint64_t(r);  // the task weights u1, u2
            o.sample_seed = 1000 + std::uint64_t(r);
            const auto train = moe::make_synthetic_tasks<T>(o);
            o.samples = test_size;
            o.sample_seed = 2000 + std::uint64_t(r);
            const auto test = moe::make_synthetic_tasks<T>(o);
            const auto seed = std::uint64_t(r);
            result[pi][0].push_back(train_one<moe::SharedBottom<T>>(bottom, train, test, epochs, lr, seed));
            result[pi][1].push_back(train_one<moe::OMoE<T>>(mmoe, train, test, epochs, lr, seed));
            result[pi][2].push_back(train_one<moe::MMoE<T>>(mmoe, train, test, epochs, lr, seed));
            if (r % 10 == 0 || r == runs)
                std::printf("p = %.1f: %d runs done (%.0f s)\n", correlations[pi], r, seconds_since(start));
            std::fflush(stdout);
        }
    }
    auto finals = [&](std::size_t pi, std::size_t m) {
        std::vector<double> v;
        for (const auto& run : result[pi][m]) v.push_back(run.train_curve.back());
        return v;
    };
    auto tests = [&](std::size_t pi, std::size_t m) {
        std::vector<double> v;
        for (const auto& run : result[pi][m]) v.push_back(run.test_loss);
        return v;
    };
    // Figure 4: the mean training loss per epoch.
    {
        std::ofstream out(prefix + ".csv");
        out << "epoch";
        for (double p : correlations)
            for (const char* m : models) out << "," << m << " p=" << p;
        out << "\n";
        for (std::size_t e = 0; e < std::size_t(epochs); ++e) {
            out << e + 1;
            for (std::size_t pi = 0; pi < 3; ++pi)
                for (std::size_t m = 0; m < 3; ++m) {
                    double s = 0;
                    for (const auto& run : result[pi][m]) s += run.train_curve[e];
                    out << "," << s / double(runs);
                }
            out << "\n";
        }
    }
    // Figure 5: every run's final training loss.
    {
        std::ofstream out(prefix + "_final.csv");
        out << "run";
        for (double p : correlations)
            for (const char* m : models) out << "," << m << " p=" << p;
        out << "\n";
        for (int r = 0; r < runs; ++r) {
            out << r + 1;
            for (std::size_t pi = 0; pi < 3; ++pi)
                for (std::size_t m = 0; m < 3; ++m) out << "," << result[pi][m][std::size_t(r)].train_curve.back();
            out << "\n";
        }
    }
    std::printf("\nFinal training loss (mean of the two tasks' MSE) over %d runs: mean (median) [10%%-90%%]\n\n"
                "| model | p = 0.5 | p = 0.9 | p = 1.0 |\n|---|---|---|---|\n", runs);
    for (std::size_t m = 0; m < 3; ++m) {
        std::printf("| %s |", models[m]);
        for (std::size_t pi = 0; pi < 3; ++pi) {
            const auto v = finals(pi, m);
            std::printf(" %.4f (%.4f) [%.4f-%.4f] |", mean(v), quantile(v, 0.5), quantile(v, 0.1), quantile(v, 0.9));
        }
        std::printf("\n");
    }
    std::printf("\nFinal test loss, mean over the runs:\n\n| model | p = 0.5 | p = 0.9 | p = 1.0 |\n|---|---|---|---|\n");
    for (std::size_t m = 0; m < 3; ++m)
        std::printf("| %s | %.4f | %.4f | %.4f |\n", models[m], mean(tests(0, m)), mean(tests(1, m)), mean(tests(2, m)));

    // The paper's findings, checked on the means of the final training losses.
    auto m_of = [&](std::size_t pi, std::size_t m) { return mean(finals(pi, m)); };
    const double sb_rise = m_of(0, 0) - m_of(2, 0), mmoe_rise = m_of(0, 2) - m_of(2, 2);
    std::printf("\nThe paper's findings on this run:\n");
    std::printf("1. every model does better at higher correlation (loss at p = 0.5 > 0.9 > 1.0): "
                "shared-bottom %s, OMoE %s, MMoE %s\n",
                m_of(0, 0) > m_of(1, 0) && m_of(1, 0) > m_of(2, 0) ? "yes" : "no",
                m_of(0, 1) > m_of(1, 1) && m_of(1, 1) > m_of(2, 1) ? "yes" : "no",
                m_of(0, 2) > m_of(1, 2) && m_of(1, 2) > m_of(2, 2) ? "yes" : "no");
    std::printf("2. shared-bottom degrades more than MMoE as p falls from 1.0 to 0.5: %s (loss rise %.4f against %.4f)\n",
                sb_rise > mmoe_rise ? "yes" : "no", sb_rise, mmoe_rise);
    std::printf("3. MMoE beats OMoE when the tasks differ (p = 0.5): %s (%.4f against %.4f); at p = 1.0: %.4f against %.4f\n",
                m_of(0, 2) < m_of(0, 1) ? "yes" : "no", m_of(0, 2), m_of(0, 1), m_of(2, 2), m_of(2, 1));
    std::printf("4. trainability (figure 5): the spread of MMoE's final losses is smaller than shared-bottom's "
                "(standard deviation over runs): p = 0.5 %s (%.4f against %.4f), p = 0.9 %s (%.4f against %.4f), "
                "p = 1.0 %s (%.4f against %.4f)\n",
                stddev(finals(0, 2)) < stddev(finals(0, 0)) ? "yes" : "no", stddev(finals(0, 2)), stddev(finals(0, 0)),
                stddev(finals(1, 2)) < stddev(finals(1, 0)) ? "yes" : "no", stddev(finals(1, 2)), stddev(finals(1, 0)),
                stddev(finals(2, 2)) < stddev(finals(2, 0)) ? "yes" : "no", stddev(finals(2, 2)), stddev(finals(2, 0)));
    std::printf("\ncurves written to %s.csv, final losses to %s_final.csv\ntotal %.1f s\n", prefix.c_str(), prefix.c_str(),
                seconds_since(start));
    return 0;
}
