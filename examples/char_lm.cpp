// A character-level language model on real text: the fortune cookie database of Debian's
// `fortunes` package (/usr/share/games/fortunes, 2.5 MB of quotations, jokes and literature).
// Three 2-layer pre-norm Transformers of the same active parameters, trained for the same wall time:
// a dense feed-forward of 256, a top-2-of-8 MoE of experts of 128 (Switch balance loss 0.01), and
// the same experts with expert-choice routing (capacity factor 2: each expert takes a quarter of the
// batch's tokens, two experts per token on average). Prints the routing diagnostics of every MoE
// layer during training (load, dropped tokens, router entropy), validation bits per character,
// tokens/s, and a sample of each model (decoded one character at a time through the KV cache).
//
// Expert choice is not causal: a token's experts depend on the other tokens of the batch, later ones
// included, so its validation loss has seen the future, and decoding one token at a time routes
// differently from training (every expert takes the single token). The README says more.
//
// Writes the learning curves (validation bits/char over training seconds) to a PNG, and with
// --save DIR each model file (DIR/char_lm_<model>.safetensors; tools/moe_transformer_torch.py loads them).
//
// Usage: char_lm [--seconds S (per model)] [--quick] [--dir DIR] [--plot FILE.png] [--save DIR]
#include <moe/data/line_plot.hpp>
#include <moe/moe.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using T = float;
using Clock = std::chrono::steady_clock;
constexpr moe::Index kSeq = 64, kBatch = 16;

/// Every plain fortune file of the directory (not the .dat indexes), concatenated.
std::string read_corpus(const std::string& dir) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() != ".dat" && e.path().extension() != ".u8") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& p : files) {
        std::ifstream f(p, std::ios::binary | std::ios::ate);
        const auto size = static_cast<std::size_t>(f.tellg());
        f.seekg(0);
        const std::size_t at = text.size();
        text.resize(at + size);
        f.read(&text[at], std::streamsize(size));
    }
    return text;
}

struct Corpus {
    std::vector<std::int64_t> train, valid;
    std::vector<unsigned char> chars;  // id -> byte
};

Corpus encode(const std::string& text) {
    Corpus c;
    auto byte = [](char ch) { return static_cast<std::size_t>(static_cast<unsigned char>(ch)); };
    std::vector<std::int64_t> id(256, -1);
    for (char ch : text) id[byte(ch)] = 0;
    for (std::size_t b = 0; b < 256; ++b)
        if (id[b] == 0) id[b] = std::int64_t(c.chars.size()), c.chars.push_back(static_cast<unsigned char>(b));
    const std::size_t cut = text.size() * 9 / 10;
    for (std::size_t i = 0; i < text.size(); ++i) (i < cut ? c.train : c.valid).push_back(id[byte(text[i])]);
    return c;
}

enum class Run { dense, top2, expert_choice };
const char* run_name(Run r) {
    return r == Run::dense ? "dense FFN 256" : r == Run::top2 ? "MoE top-2 of 8 x 128" : "MoE expert choice (cf 2) of 8 x 128";
}
const char* run_file(Run r) { return r == Run::dense ? "dense" : r == Run::top2 ? "top2" : "expert_choice"; }

moe::MoETransformerSpec spec(moe::Index vocab, Run run) {
    moe::MoETransformerSpec s;
    s.vocab = vocab;
    s.max_positions = kSeq;
    s.layers = 2;
    s.layer.dim = 64;
    s.layer.heads = 4;
    const bool moe_ffn = run != Run::dense;
    s.layer.ffn = moe_ffn ? 128 : 256;  // the same active feed-forward: 2 experts of 128 or one of 256
    s.layer.experts = moe_ffn ? 8 : 0;
    s.layer.moe.k = 2;
    if (run == Run::expert_choice) {
        s.layer.moe.routing = moe::Routing::expert_choice;
        s.layer.moe.capacity_factor = 2.0;  // c = 2 N / 8: on average two experts per token, as top-2
    } else {
        s.layer.moe.balance_coef = 0.01;
    }
    return s;
}

/// One line per MoE layer: load max/mean, dropped tokens, router entropy, dead experts, shares.
std::string routing_report(moe::Model<moe::MoETransformer<T>>& lm) {
    std::string out;
    for (moe::Index l = 0; l < lm.spec().layers; ++l) {
        const moe::SparseMoE<T>* ffn = lm.layer(l).sparse_ffn();
        if (!ffn) break;
        const moe::RoutingStats& s = ffn->stats();
        char line[200];
        std::snprintf(line, sizeof line,
                      "  layer %ld: load max/mean %.2f, dropped tokens %ld of %ld, router entropy %.2f nats (uniform %.2f), dead "
                      "experts %ld; shares",
                      long(l), s.load_balance, long(s.dropped_tokens), long(s.tokens), s.entropy, std::log(8.0), long(s.dead_experts));
        out += line;
        double total = 0;
        for (moe::Index v : s.routed) total += double(v);
        for (moe::Index v : s.routed) out += " " + std::to_string(int(std::lround(100.0 * double(v) / std::max(1.0, total)))) + "%";
        out += "\n";
    }
    return out;
}

/// kBatch windows of kSeq + 1 tokens from `data` starting at `starts`: inputs and next tokens.
void windows(const std::vector<std::int64_t>& data, const std::vector<std::size_t>& starts, std::vector<std::int64_t>& in,
             moe::Matrix<T>& next) {
    in.clear();
    next.resize(1, moe::Index(starts.size()) * kSeq);
    for (std::size_t w = 0; w < starts.size(); ++w)
        for (moe::Index t = 0; t < kSeq; ++t) {
            in.push_back(data[starts[w] + std::size_t(t)]);
            next(0, moe::Index(w) * kSeq + t) = T(data[starts[w] + std::size_t(t) + 1]);
        }
}

struct Result {
    double bpc = 0, tokens_per_second = 0;
    long steps = 0;
    std::string load, sample;
    std::vector<double> curve_seconds, curve_bpc;  // validation along the way (training time only)
};

/// Validation bits per character over fixed windows (evaluation mode).
double validation_bpc(moe::Model<moe::MoETransformer<T>>& lm, const std::vector<std::int64_t>& valid) {
    lm.eval();
    moe::CrossEntropyLoss<T> ce;
    std::vector<std::int64_t> in;
    moe::Matrix<T> next;
    double total = 0;
    const int batches = 8;
    for (int b = 0; b < batches; ++b) {
        std::vector<std::size_t> starts;
        for (moe::Index w = 0; w < kBatch; ++w) starts.push_back(std::size_t(b * kBatch + w) * (valid.size() - kSeq - 1) / (batches * kBatch));
        windows(valid, starts, in, next);
        total += double(ce.forward(lm.forward(in, kSeq), next, moe::ConstView<T>()));
    }
    lm.train();
    return total / batches / std::log(2.0);
}

std::string generate(moe::Model<moe::MoETransformer<T>>& lm, const Corpus& c, const std::string& prompt, int length, moe::Rng& rng) {
    lm.eval();
    std::vector<std::int64_t> ids;
    for (char ch : prompt)
        for (std::size_t i = 0; i < c.chars.size(); ++i)
            if (c.chars[i] == static_cast<unsigned char>(ch)) ids.push_back(std::int64_t(i));
    // One token per step through the KV cache; when the positions run out, start a new cache on the
    // last half window.
    auto cache = lm.make_cache(1);
    const moe::MatrixView<T>* logits = nullptr;
    auto feed = [&](std::size_t from) {
        cache = lm.make_cache(1);
        for (std::size_t i = from; i < ids.size(); ++i) logits = &lm.decode({ids[i]}, cache);
    };
    feed(0);
    std::string out = prompt;
    for (int n = 0; n < length; ++n) {
        const moe::Index pick = moe::sample_token(logits->col(0), {0.8, 0.95}, rng);  // temperature 0.8, top-p 0.95
        ids.push_back(pick);
        out += char(c.chars[std::size_t(pick)]);
        if (cache.length() == kSeq) feed(ids.size() - std::size_t(kSeq / 2));
        else logits = &lm.decode({pick}, cache);
    }
    lm.train();
    return out;
}

Result train(const Corpus& c, Run run, double seconds, const std::string& save_dir) {
    std::printf("\n%s\n", run_name(run));
    moe::Model<moe::MoETransformer<T>> lm(spec(moe::Index(c.chars.size()), run), 1);
    moe::AdamOptions ao;
    ao.lr = 2e-3;
    moe::Adam<T> adam(ao);
    moe::CrossEntropyLoss<T> ce;
    moe::Rng rng(7);
    std::vector<std::int64_t> in;
    moe::Matrix<T> next;
    Result r;
    lm.train();
    double trained = 0;  // seconds of training, validation left out
    auto start = Clock::now();
    while (trained + std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        if (r.steps % 100 == 0) {  // a point of the learning curve
            trained += std::chrono::duration<double>(Clock::now() - start).count();
            r.curve_seconds.push_back(trained);
            r.curve_bpc.push_back(validation_bpc(lm, c.valid));
            if (r.steps % 500 == 0 && r.steps > 0) {  // the routing diagnostics of the last training batch
                std::printf("step %ld, %.0f s: validation %.3f bits/char\n%s", r.steps, trained, r.curve_bpc.back(),
                            routing_report(lm).c_str());
                std::fflush(stdout);
            }
            start = Clock::now();
        }
        std::vector<std::size_t> starts;
        for (moe::Index w = 0; w < kBatch; ++w) starts.push_back(std::size_t(rng.below(c.train.size() - kSeq - 1)));
        windows(c.train, starts, in, next);
        lm.zero_grad();
        ce.forward(lm.forward(in, kSeq), next, moe::ConstView<T>());
        lm.backward(ce.backward());
        moe::clip_grad_norm(lm.params(), 1.0);
        adam.step(lm.params());
        ++r.steps;
    }
    trained += std::chrono::duration<double>(Clock::now() - start).count();
    r.tokens_per_second = double(r.steps * kBatch * kSeq) / trained;
    r.bpc = validation_bpc(lm, c.valid);
    r.curve_seconds.push_back(trained);
    r.curve_bpc.push_back(r.bpc);
    r.load = routing_report(lm);
    r.sample = generate(lm, c, "The ", 160, rng);
    if (!save_dir.empty()) {
        const std::string path = save_dir + "/char_lm_" + run_file(run) + ".safetensors";
        moe::save(lm, path);
        std::printf("saved %s\n", path.c_str());
    }
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 60;
    std::string dir = "/usr/share/games/fortunes", plot = "char_lm_curve.png", save_dir;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) seconds = 2;
        else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
        else if (!std::strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!std::strcmp(argv[i], "--plot") && i + 1 < argc) plot = argv[++i];
        else if (!std::strcmp(argv[i], "--save") && i + 1 < argc) save_dir = argv[++i];
        else {
            std::fprintf(stderr, "usage: %s [--seconds S] [--quick] [--dir DIR] [--plot FILE.png] [--save DIR]\n", argv[0]);
            return 2;
        }
    }
    if (!std::filesystem::is_directory(dir)) {
        std::printf("char_lm: %s is not there (Debian's `fortunes` package; scripts/test installs it): nothing to do\n", dir.c_str());
        return 0;
    }
    const Corpus c = encode(read_corpus(dir));
    std::printf("corpus: %zu training and %zu validation characters, %zu distinct; %.0f s per model\n", c.train.size(), c.valid.size(),
                c.chars.size(), seconds);
    const Run runs[] = {Run::dense, Run::top2, Run::expert_choice};
    std::vector<Result> results;
    for (Run run : runs) results.push_back(train(c, run, seconds, save_dir));
    std::printf("\n| model | steps | tokens/s | validation bits/char |\n|---|---:|---:|---:|\n");
    for (std::size_t i = 0; i < results.size(); ++i)
        std::printf("| %s | %ld | %.0f | %.3f |\n", run_name(runs[i]), results[i].steps, results[i].tokens_per_second, results[i].bpc);
    for (std::size_t i = 1; i < results.size(); ++i)
        std::printf("\nrouting of the last training batch, %s:\n%s", run_name(runs[i]), results[i].load.c_str());
    for (std::size_t i = 0; i < results.size(); ++i) std::printf("\nsample, %s: %s\n", run_name(runs[i]), results[i].sample.c_str());
    const std::array<std::uint8_t, 3> colours[] = {{214, 39, 40}, {31, 119, 180}, {44, 160, 44}};
    std::vector<moe::LineCurve> series;
    for (std::size_t i = 0; i < results.size(); ++i)
        series.push_back({run_name(runs[i]), results[i].curve_seconds, results[i].curve_bpc, colours[i]});
    moe::write_line_plot(plot, series, "training seconds", "validation bits/char");
    std::printf("\nlearning curves (red dense, blue top-2, green expert choice): %s\n", plot.c_str());
    return 0;
}
