// Trains a small MLP on a seeded synthetic binary task and reports loss and accuracy per epoch.
// The task: y = 1 when a hidden two-layer "teacher" network scores x above its median, so a linear
// model cannot fit it but a hidden layer can. Usage: train_mlp [epochs]
#include <moe/moe.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

int main(int argc, char** argv) {
    using T = float;
    const int epochs = argc > 1 ? std::atoi(argv[1]) : 20;
    const moe::Index features = 16, n_train = 8192, n_test = 2048, batch = 128;

    // Data: x ~ N(0, I); the label thresholds a random teacher network at its median.
    moe::Rng rng(2024);
    moe::Model<moe::MLP<double>> teacher(moe::MLPSpec{{features, 32, 1}, moe::ActivationKind::tanh}, 99);
    auto make = [&](moe::Index n, moe::Matrix<T>& x, moe::Matrix<T>& y) {
        moe::Matrix<double> xd(features, n);
        for (moe::Index i = 0; i < xd.size(); ++i) xd.data()[i] = rng.normal();
        const moe::Matrix<double> score = teacher.forward(xd);
        std::vector<double> s(score.data(), score.data() + n);
        std::nth_element(s.begin(), s.begin() + n / 2, s.end());
        x = xd.cast<T>();
        y = (score.array() > s[std::size_t(n / 2)]).cast<T>().matrix();
    };
    moe::Matrix<T> x_train, y_train, x_test, y_test;
    make(n_train, x_train, y_train);
    make(n_test, x_test, y_test);

    moe::MLPSpec spec{{features, 64, 64, 1}};
    spec.batchnorm = true;
    spec.dropout = 0.1;
    moe::Model<moe::MLP<T>> net(spec, 7);
    moe::BCEWithLogitsLoss<T> loss;
    moe::AdamOptions opts;
    opts.lr = 3e-3;
    opts.weight_decay = 1e-4;
    moe::Adam<T> adam(opts);
    const int steps_per_epoch = int(n_train / batch);
    moe::CosineAnnealingLR schedule(opts.lr, double(epochs * steps_per_epoch));

    std::printf("moe %s: training an MLP %ld-64-64-1 (batchnorm, dropout 0.1) on %ld samples\n", MOE_VERSION_STRING,
                long(features), long(n_train));
    std::vector<moe::Index> order(static_cast<std::size_t>(n_train));
    std::iota(order.begin(), order.end(), 0);
    moe::Matrix<T> xb(features, batch), yb(1, batch);
    const auto start = std::chrono::steady_clock::now();
    int step = 0;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        net.train();
        moe::shuffle(order.begin(), order.end(), rng);
        double total = 0;
        for (int b = 0; b < steps_per_epoch; ++b) {
            for (moe::Index j = 0; j < batch; ++j) {
                const moe::Index i = order[std::size_t(b * batch + j)];
                xb.col(j) = x_train.col(i);
                yb(0, j) = y_train(0, i);
            }
            adam.set_lr(schedule(step++));
            net.zero_grad();
            total += loss.forward(net.forward(xb), yb);
            net.backward(loss.backward(), false);
            moe::clip_grad_norm(net.params(), 5.0);
            adam.step(net.params());
        }
        net.eval();
        const moe::Matrix<T> logits = net.forward(x_test);
        const double test_loss = loss.forward(logits, y_test);
        const double acc = ((logits.array() > 0).cast<T>() == y_test.array()).cast<double>().mean();
        std::printf("epoch %2d  train loss %.4f  test loss %.4f  test accuracy %.3f\n", epoch, total / steps_per_epoch,
                    test_loss, acc);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("done in %.2f s\n", secs);
    return 0;
}
