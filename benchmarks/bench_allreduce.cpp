// The cost of data-parallel training's all-reduce against the step it serves, on this machine:
// run with `mpirun -np 2 bench_allreduce` (one OpenMP thread per rank unless OMP_NUM_THREADS says
// otherwise). Prints, as medians of repetitions measured in one run:
//   - the training step of the default benchmark MMoE (8 experts 64-256-128, 3 tasks) at batch 2048
//     per rank: forward, loss, backward and Adam, without the all-reduce;
//   - the all-reduce of its gradient (one MPI_Allreduce of the flat store) and of messages from 1 to
//     4M floats, from which the latency (alpha) and per-byte time (beta) of the alpha-beta model are
//     fitted; docs/distributed.md scales them to N machines.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "moe/moe.hpp"
#include "moe/mpi/communicator.hpp"

#include "bench_specs.hpp"

namespace {

using T = float;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
    return v[v.size() / 2];
}

moe::MMoESpec default_spec() { return default_mmoe_spec(); }

/// Median seconds of an all-reduce of n floats (every rank), after a warm-up.
double allreduce_seconds(const moe::mpi::Communicator& comm, moe::Index n, int reps) {
    std::vector<T> v(static_cast<std::size_t>(n), 1.0f);
    comm.sum(v.data(), n);
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
        MPI_Barrier(comm.get());
        const auto start = Clock::now();
        comm.sum(v.data(), n);
        t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    return comm.sum(median(t)) / comm.size();  // the ranks' medians, averaged
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    {
        const moe::mpi::Communicator comm;
        const moe::Index batch = 2048;
        moe::Model<moe::MMoE<T>> model(default_spec(), 1);
        moe::MultiTaskLoss<T> loss(model.tasks());
        moe::Adam<T> adam(moe::AdamOptions{});
        moe::Rng rng(std::uint64_t(3 + comm.rank()));
        moe::Matrix<T> x(64, batch), y(3, batch);
        for (moe::Index i = 0; i < x.size(); ++i) x.data()[i] = T(rng.normal());
        for (moe::Index j = 0; j < batch; ++j) y.col(j) << T(rng.below(2)), T(rng.below(2)), T(rng.uniform());
        model.train();
        auto step = [&] {
            model.zero_grad();
            loss.forward(model.forward(x), y);
            model.backward(loss.backward());
            adam.step(model.params());
        };
        step();
        std::vector<double> t;
        for (int r = 0; r < 15; ++r) {
            const auto start = Clock::now();
            step();
            t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
        }
        const double compute = comm.sum(median(t)) / comm.size();
        const moe::Index params = model.params().size();
        const double gradient = allreduce_seconds(comm, params, 30);
        if (comm.rank() == 0) {
            std::printf("ranks %d, threads per rank %s\n", comm.size(), std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "default");
            std::printf("step (batch %ld per rank, no all-reduce): %.3f ms\n", long(batch), 1e3 * compute);
            std::printf("all-reduce of the gradient (%ld floats, %.2f MB): %.3f ms = %.1f%% of the step\n", long(params),
                        double(params) * 4e-6, 1e3 * gradient, 100 * gradient / compute);
            std::printf("\nfloats      bytes       all-reduce (us)\n");
        }
        // The alpha-beta fit: t(bytes) = alpha + beta * bytes, least squares over the sizes.
        std::vector<double> sizes, times;
        for (moe::Index n : {moe::Index(1), moe::Index(1) << 10, moe::Index(1) << 14, moe::Index(1) << 16, moe::Index(1) << 18,
                             moe::Index(1) << 20, moe::Index(1) << 22}) {
            const double s = allreduce_seconds(comm, n, n >= (moe::Index(1) << 20) ? 10 : 50);
            sizes.push_back(double(n) * 4), times.push_back(s);
            if (comm.rank() == 0) std::printf("%-11ld %-11ld %.1f\n", long(n), long(n) * 4, 1e6 * s);
        }
        double mx = 0, my = 0;
        for (std::size_t i = 0; i < sizes.size(); ++i) mx += sizes[i], my += times[i];
        mx /= double(sizes.size()), my /= double(sizes.size());
        double sxy = 0, sxx = 0;
        for (std::size_t i = 0; i < sizes.size(); ++i) sxy += (sizes[i] - mx) * (times[i] - my), sxx += (sizes[i] - mx) * (sizes[i] - mx);
        const double beta = sxy / sxx, alpha = times[0];  // latency: the 1-float message
        if (comm.rank() == 0)
            std::printf("\nalpha (latency) %.1f us, beta %.3f ns/byte (%.2f GB/s effective)\n", 1e6 * alpha, 1e9 * beta, 1e-9 / beta);
    }
    MPI_Finalize();
    return 0;
}
