// Data-parallel training of an MMoE on MPI (moe::mpi): every rank generates the same synthetic
// two-task data set (the MMoE paper's, task correlation 0.5) and trains on its shard; one
// MPI_Allreduce per step keeps the ranks' parameters identical; rank 0 prints the epochs, the
// validation metrics over all ranks' shards, the time a step spends in the all-reduce, and writes
// a checkpoint every epoch.
//
//   mpirun -np 2 build/release/examples/train_distributed                  # one machine
//   mpirun -np 8 --hostfile hosts build/release/examples/train_distributed  # several ("host slots=4" lines)
//   mpirun -np 1 .../train_distributed --resume train_distributed.safetensors  # continue on any number of ranks
//
// Usage: train_distributed [--quick] [--epochs N] [--batch B (per rank)] [--checkpoint FILE] [--resume FILE]
#include <moe/data/synthetic.hpp>
#include <moe/moe.hpp>
#include <moe/mpi/distributed_fit.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

moe::MMoESpec model_spec(moe::Index input) {
    moe::MMoESpec s;
    s.input = input;
    s.experts = 8;
    s.expert_hidden = {64};
    s.expert_dim = 16;
    s.tower_hidden = {8};
    s.tasks = moe::synthetic_tasks();
    return s;
}

int run(int argc, char** argv, const moe::mpi::Communicator& comm) {
    int epochs = 5;
    moe::Index batch = 128, samples = 60000;
    std::string checkpoint = "train_distributed.safetensors", resume;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) epochs = 1, samples = 4000;
        else if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atol(argv[++i]);
        else if (!std::strcmp(argv[i], "--checkpoint") && i + 1 < argc) checkpoint = argv[++i];
        else if (!std::strcmp(argv[i], "--resume") && i + 1 < argc) resume = argv[++i];
        else {
            if (comm.rank() == 0)
                std::fprintf(stderr, "usage: %s [--quick] [--epochs N] [--batch B] [--checkpoint FILE] [--resume FILE]\n", argv[0]);
            return 2;
        }
    }
    // The same data on every rank (the same seeds); each trains on its shard. With a file, read only
    // your rows instead: TableFormat::shard = rank, shards = ranks.
    moe::SyntheticOptions so;
    so.samples = samples;
    so.dim = 100;
    so.seed = 1;
    const auto all = moe::make_synthetic_tasks<float>(so);
    so.samples = samples / 5;
    so.sample_seed = 2;
    const auto valid = moe::make_synthetic_tasks<float>(so);
    const auto mine = moe::mpi::shard(all, comm), valid_mine = moe::mpi::shard(valid, comm);

    moe::Model<moe::MMoE<float>> model = resume.empty() ? moe::Model<moe::MMoE<float>>(model_spec(so.dim), 1)
                                                         : moe::load<moe::MMoE<float>>(resume);
    moe::MultiTaskLoss<float> loss(model.tasks());
    moe::FitOptions o;
    o.epochs = epochs;
    o.batch_size = batch;
    o.lr = 2e-3;
    o.progress = moe::Progress::lines;  // rank 0 prints; the others are silent
    moe::mpi::DistributedOptions d;
    d.checkpoint = checkpoint;
    if (comm.rank() == 0)
        std::printf("%d rank(s), %ld samples (%ld on rank 0), batch %ld per rank (global %ld)%s\n", comm.size(), long(all.size()),
                    long(mine.size()), long(batch), long(batch) * comm.size(), resume.empty() ? "" : (", resumed from " + resume).c_str());
    const auto start = std::chrono::steady_clock::now();
    const moe::FitHistory h = moe::mpi::fit(model, loss, mine, &valid_mine, o, comm, d);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    // What a step's all-reduce costs here: the gradient's size, summed over the ranks 20 times.
    moe::Vector<float> g = moe::Vector<float>::Ones(model.params().size());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) comm.sum(g.data(), g.size());
    const double allreduce = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 20;
    const double steps = double(h.epochs.size()) * double(mine.size() / batch);
    if (comm.rank() == 0) {
        std::printf("trained in %.1f s: %.2f ms per step, of which the all-reduce of %ld floats takes %.3f ms\n", seconds,
                    1e3 * seconds / steps, long(g.size()), 1e3 * allreduce);
        for (const auto& m : h.epochs.back().validation) std::printf("validation %s rmse %.4f\n", m.task.c_str(), m.rmse);
        std::printf("checkpoint: %s\n", checkpoint.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int code = 0, rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    try {
        const moe::mpi::Communicator comm;
        code = run(argc, argv, comm);
    } catch (const std::exception& e) {
        // moe::mpi::fit's errors reach every rank (the ranks agree on them): rank 0 reports.
        if (rank == 0) std::fprintf(stderr, "train_distributed: %s\n", e.what());
        code = 1;
    }
    MPI_Finalize();
    return code;
}
