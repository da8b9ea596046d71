#pragma once
// What the benchmark suites share: the thread counts to run (MOE_BENCH_THREADS, default "1,2"),
// setting the thread count of a row, the GFLOP/s counter, and a line naming the GEMM backend.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <dlfcn.h>

#include <moe/moe.hpp>

namespace moe::bench {

/// Thread counts of the threaded rows: MOE_BENCH_THREADS="1,2,4,8,16" (scripts/bench --threads), or 1,2.
inline std::vector<std::int64_t> thread_counts() {
    std::vector<std::int64_t> out;
    const char* env = std::getenv("MOE_BENCH_THREADS");
    std::stringstream list(env && *env ? env : "1,2");
    for (std::string item; std::getline(list, item, ',');)
        if (!item.empty()) out.push_back(std::stoll(item));
    return out;
}

/// Sets this row's OpenMP thread count; false (and the row skipped) without OpenMP for > 1 thread.
inline bool set_threads(benchmark::State& state, std::int64_t threads) {
#ifdef _OPENMP
    (void)state;
    omp_set_num_threads(static_cast<int>(threads));
    return true;
#else
    if (threads != 1) state.SkipWithError("built without OpenMP");
    return threads == 1;
#endif
}

inline void set_flops(benchmark::State& state, double flops_per_iteration) {
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops_per_iteration * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

/// The peak resident memory of a stretch of code, from Linux's /proc/self (0 elsewhere): start()
/// resets the process's high-water mark (clear_refs 5) and notes the resident size; peak_mib() is
/// the high-water mark since then, minus that size.
class PeakMemory {
public:
    void start() {
        if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
            std::fputs("5", f);
            std::fclose(f);
        }
        start_kib_ = status_kib("VmRSS:");
    }
    double peak_mib() const { return (status_kib("VmHWM:") - start_kib_) / 1024.0; }

private:
    static double status_kib(const char* key) {
        std::FILE* f = std::fopen("/proc/self/status", "r");
        if (!f) return 0;
        char line[256];
        double kib = 0;
        const std::size_t n = std::strlen(key);
        while (std::fgets(line, sizeof line, f))
            if (!std::strncmp(line, key, n)) kib = std::atof(line + n);
        std::fclose(f);
        return kib;
    }
    double start_kib_ = 0;
};

/// "eigen", or "blas: <the library file cblas_sgemm came from> (<OpenBLAS's kernel>)".
inline std::string backend_description() {
    std::string s = moe::detail::gemm_backend();
#ifdef MOE_BLAS
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&cblas_sgemm), &info) && info.dli_fname) s += std::string(": ") + info.dli_fname;
    using CoreName = char* (*)();
    if (auto core = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) s += std::string(" (") + core() + ")";
#endif
    return s;
}

/// Prints the backend, and checks its products against Eigen's (all four transposes) before any row
/// runs: a BLAS kernel chosen for this CPU (OPENBLAS_CORETYPE) must compute the same numbers.
inline void print_backend() {
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    std::printf("moe GEMM backend: %s; OPENBLAS_CORETYPE=%s\n", backend_description().c_str(), core ? core : "(unset)");
    const Index m = 131, n = 97, k = 203;
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            const Matrix<float> a = Matrix<float>::Random(ta ? k : m, ta ? m : k), b = Matrix<float>::Random(tb ? n : k, tb ? k : n);
            Matrix<float> c(m, n), ref(m, n);
            moe::detail::gemm<float>(ta, tb, m, n, k, 1.0f, a.data(), a.rows(), b.data(), b.rows(), false, c.data(), m);
            const Matrix<float> at = ta ? Matrix<float>(a.transpose()) : a, bt = tb ? Matrix<float>(b.transpose()) : b;
            ref.noalias() = at * bt;
            const float err = (c - ref).cwiseAbs().maxCoeff() / std::max(1.0f, ref.cwiseAbs().maxCoeff());
            if (!(err < 1e-4f)) {
                std::fprintf(stderr, "moe: the GEMM backend differs from Eigen by %g (transposes %d %d): not benchmarking\n",
                             double(err), int(ta), int(tb));
                std::exit(1);
            }
        }
}

/// The main of every suite: checks and prints the backend, registers the suite's rows, runs them.
inline int run_benchmarks(int argc, char** argv, void (*register_rows)()) {
    print_backend();
    register_rows();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace moe::bench
