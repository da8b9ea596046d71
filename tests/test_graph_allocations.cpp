// Graph models allocate nothing in steady state: after the first training step at a batch size,
// steps (forward, loss, backward, Adam) at that size or a smaller one, and predict, allocate nothing
// (the plan's values and gradients, the kernels' scratch and the run-time shapes only grow). Joins
// the test_graph program where the allocation counter may replace malloc (not under ASan, not on
// OpenBLAS's OpenMP build, which allocates inside OpenBLAS: see tests/CMakeLists.txt).
#include <moe/graph/graph_model.hpp>
#include <moe/moe.hpp>
#include <moe/testing/gradcheck.hpp>

#include "support/alloc_counter.hpp"
#include "support/catch.hpp"
#include "support/fixtures.hpp"

namespace test_graph_allocations {

using namespace moe;
using namespace moe::graph;

TEST_CASE("Graph model: training steps and predict allocate nothing after the first call at a batch size",
          "[graph][alloc]") {
    for (const char* file :
         {"mmoe_corrected.yaml", "ops_norms.yaml", "ops_matmul.yaml", "ops_einsum.yaml", "blocks_mmoe.yaml", "blocks_ple.yaml"}) {
        INFO(file);
        Model<GraphModel<float>> model(graph_spec_from_file(moe::testing::fixture_path(std::string("graph/") + file)),
                                       1);
        MultiTaskLoss<float> loss(model.tasks());
        Adam<float> adam{AdamOptions{}};
        const Matrix<float> x = moe::testing::random_matrix(model.in_features(), 300, 2).cast<float>();
        const Matrix<float> y = moe::testing::labels_for(model.tasks(), 300, 3).cast<float>();
        const Matrix<float> xs = x.leftCols(120), ys = y.leftCols(120);
        auto step = [&](const Matrix<float>& xb, const Matrix<float>& yb) {
            model.zero_grad();
            loss.forward(model.forward(xb), yb);
            model.backward(loss.backward());
            adam.step(model.params());
        };
        InferenceWorkspace<float> ws;
        model.train();
        step(x, y);
        model.predict(x, ws);
        const long before = moe::testing::allocations();
        for (int i = 0; i < 2; ++i) step(x, y);
        step(xs, ys);
        step(x, y);
        for (int i = 0; i < 2; ++i) model.predict(x, ws);
        CHECK(moe::testing::allocations() - before == 0);
    }
}

}  // namespace test_graph_allocations
