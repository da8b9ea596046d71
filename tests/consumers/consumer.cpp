// A tiny program of a project that consumes moe: a few training steps of a small MLP, and a table
// read through moe::data (zlib).
#include <moe/data/table.hpp>
#include <moe/moe.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

int main() {
    moe::Model<moe::MLP<float>> net(moe::MLPSpec{{4, 8, 1}}, 1);
    moe::Matrix<float> x = moe::Matrix<float>::Ones(4, 16), y = moe::Matrix<float>::Zero(1, 16);
    moe::MSELoss<float> loss;
    moe::Adam<float> adam;
    const float before = loss.forward(net.forward(x), y);
    for (int i = 0; i < 20; ++i) {
        net.zero_grad();
        loss.forward(net.forward(x), y);
        net.backward(loss.backward());
        adam.step(net.params());
    }
    const float after = loss.forward(net.forward(x), y);
    std::cout << "moe " << MOE_VERSION_STRING << ": loss " << before << " -> " << after << "\n";
    const char* path = "consumer_table.csv";
    std::ofstream(path) << "1,a\n2,b\n";
    const moe::Table t = moe::read_table(path, {{"n", moe::ColumnKind::numeric}, {"c", moe::ColumnKind::categorical}});
    std::remove(path);
    return after < before && t.rows == 2 ? 0 : 1;
}
