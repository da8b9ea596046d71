// libFuzzer target for model graphs in YAML: any text must give a model or moe::config_error (a
// graph that does not load or check), never a crash, a sanitizer report, another exception, or a
// huge allocation. A graph that checks is built and runs a training step and a predict on a batch
// of 3 zeros, when its parameters and values are small enough for the fuzzer's memory limit (a
// real model may be large; the checks refuse only sizes past 2^31). Built by the fuzz preset when
// yaml-cpp is found; run by scripts/fuzz.
#include <moe/graph/graph_model.hpp>
#include <moe/moe.hpp>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const moe::graph::CheckedGraph g = moe::graph::check_graph(moe::graph::parse_graph_yaml(text, "fuzz.yaml"));
        double elements = 0;
        for (const auto& v : g.values) elements += v.per_sample();
        if (g.params() > 1e6 || elements > 1e5) return 0;
        moe::Model<moe::graph::GraphModel<float>> model(moe::graph::GraphModelSpec{text, "fuzz.yaml"}, 1);
        const moe::Matrix<float> x = moe::Matrix<float>::Zero(model.in_features(), 3);
        moe::MultiTaskLoss<float> loss(model.tasks());
        const moe::Matrix<float> y = moe::Matrix<float>::Zero(moe::Index(model.tasks().size()), 3);
        model.train();
        loss.forward(model.forward(x), y);
        model.backward(loss.backward(), true);
        moe::InferenceWorkspace<float> ws;
        model.predict(x, ws);
    } catch (const moe::config_error&) {
    }
    return 0;
}
