// SparseMoE and the router's aux losses: forward against a naive per-token loop, k = E against the
// dense layer, gradient checks of every routing option and aux loss, diagnostics, bad input.
#include <algorithm>
#include <cmath>
#include <limits>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_sparse_moe {

using namespace moe;
using moe::testing::check_gradients;
using moe::testing::Probe;
using moe::testing::random_matrix;
using Catch::Matchers::Contains;

namespace {

SparseMoESpec small_spec(Index experts, Index k) { return moe::testing::small_sparse_moe(experts, k); }

double act(ActivationKind kind, double v) {
    switch (kind) {
        case ActivationKind::relu: return std::max(v, 0.0);
        case ActivationKind::gelu: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
        case ActivationKind::tanh: return std::tanh(v);
        default: return v;
    }
}

/// Expert e on one token, from the parameters in the store: an MLP or a SwiGLU expert.
Vector<double> expert_output(Model<SparseMoE<double>>& m, Index e, const Vector<double>& xt) {
    auto& ps = m.params();
    const std::string ex = "experts." + std::to_string(e);
    if (m.spec().expert == ExpertKind::swiglu) {
        const Vector<double> a = Matrix<double>(ps.value(ex + ".w1.weight")) * xt, b = Matrix<double>(ps.value(ex + ".w3.weight")) * xt;
        Vector<double> h(a.size());
        for (Index i = 0; i < a.size(); ++i) h(i) = a(i) / (1 + std::exp(-a(i))) * b(i);
        return Matrix<double>(ps.value(ex + ".w2.weight")) * h;
    }
    Vector<double> h = Matrix<double>(ps.value(ex + ".0.weight")) * xt + Matrix<double>(ps.value(ex + ".0.bias")).col(0);
    for (Index i = 0; i < h.size(); ++i) h(i) = act(m.spec().activation, h(i));
    return Matrix<double>(ps.value(ex + ".2.weight")) * h + Matrix<double>(ps.value(ex + ".2.bias")).col(0);
}

/// Expert choice written the obvious way: each expert sorts all tokens by its probability (ties:
/// lower token) and takes the first c = ceil(cf N / E); y_t = sum over the experts that took t.
Matrix<double> naive_expert_choice(Model<SparseMoE<double>>& m, const Matrix<double>& x) {
    const SparseMoESpec& s = m.spec();
    const Index n = x.cols(), e = s.experts;
    const Index c = Index(std::min(double(n), std::ceil(s.capacity_factor * double(n) / double(e))));
    Matrix<double> logits = Matrix<double>(m.params().value("router.weight")) * x;
    Matrix<double> p(e, n);
    for (Index t = 0; t < n; ++t) {
        Vector<double> q = (logits.col(t).array() - logits.col(t).maxCoeff()).exp();
        p.col(t) = q / q.sum();
    }
    Matrix<double> y = Matrix<double>::Zero(s.dim, n);
    std::vector<bool> taken(static_cast<std::size_t>(n), false);
    for (Index ex = 0; ex < e; ++ex) {
        std::vector<Index> order(static_cast<std::size_t>(n));
        for (Index t = 0; t < n; ++t) order[std::size_t(t)] = t;
        std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return p(ex, a) > p(ex, b); });
        for (Index r = 0; r < c; ++r) {
            const Index t = order[std::size_t(r)];
            y.col(t) += p(ex, t) * expert_output(m, ex, x.col(t));
            taken[std::size_t(t)] = true;
        }
    }
    if (s.dropped == DroppedTokens::passthrough)
        for (Index t = 0; t < n; ++t)
            if (!taken[std::size_t(t)]) y.col(t) = x.col(t);
    return y;
}

/// The layer written the obvious way, token by token, from the parameters in the store (no noise).
Matrix<double> naive_forward(Model<SparseMoE<double>>& m, const Matrix<double>& x) {
    const SparseMoESpec& s = m.spec();
    auto& ps = m.params();
    const Index n = x.cols(), e = s.experts, k = s.k;
    Matrix<double> logits = Matrix<double>(ps.value("router.weight")) * x;
    if (s.router_bias) logits.colwise() += Matrix<double>(ps.value("router.bias")).col(0);
    std::vector<std::vector<Index>> chosen(static_cast<std::size_t>(n));
    std::vector<std::vector<double>> w(static_cast<std::size_t>(n));
    for (Index t = 0; t < n; ++t) {
        Vector<double> p = (logits.col(t).array() - logits.col(t).maxCoeff()).exp();
        p /= p.sum();
        std::vector<Index> idx(static_cast<std::size_t>(e));
        for (Index i = 0; i < e; ++i) idx[std::size_t(i)] = i;
        std::stable_sort(idx.begin(), idx.end(), [&](Index a, Index b) { return logits(a, t) > logits(b, t); });
        idx.resize(std::size_t(k));
        double sum = 0;
        for (Index i : idx) sum += p(i);
        for (Index i : idx) w[std::size_t(t)].push_back(s.renormalize ? p(i) / sum : p(i));
        chosen[std::size_t(t)] = idx;
    }
    // Capacity: first choices of all tokens before second choices, earlier tokens first.
    const Index cap = s.capacity_factor > 0 ? Index(std::min(double(n * k), std::ceil(s.capacity_factor * double(n * k) / double(e)))) : n * k;
    std::vector<Index> used(static_cast<std::size_t>(e), 0);
    std::vector<std::vector<bool>> runs(static_cast<std::size_t>(n), std::vector<bool>(static_cast<std::size_t>(k)));
    for (Index r = 0; r < k; ++r)
        for (Index t = 0; t < n; ++t) {
            auto& u = used[std::size_t(chosen[std::size_t(t)][std::size_t(r)])];
            runs[std::size_t(t)][std::size_t(r)] = u < cap;
            u += u < cap;
        }
    Matrix<double> y = Matrix<double>::Zero(s.dim, n);
    for (Index t = 0; t < n; ++t) {
        bool any = false;
        for (Index r = 0; r < k; ++r) {
            if (!runs[std::size_t(t)][std::size_t(r)]) continue;
            any = true;
            y.col(t) += w[std::size_t(t)][std::size_t(r)] * expert_output(m, chosen[std::size_t(t)][std::size_t(r)], x.col(t));
        }
        if (!any && s.dropped == DroppedTokens::passthrough) y.col(t) = x.col(t);
    }
    return y;
}

/// Gradient check of sum(R .* y) + aux_loss() over the input and every parameter, in training mode.
double gradcheck_sparse(const SparseMoESpec& spec, Index tokens = 12, std::uint64_t seed = 3) {
    Model<SparseMoE<double>> m(spec, seed);
    m.freeze_noise(true);
    Matrix<double> x = random_matrix(spec.dim, tokens, seed + 10);
    const Matrix<double> r = random_matrix(spec.dim, tokens, seed + 20);
    auto f = [&] { return m.forward(x).cwiseProduct(r).sum() + m.aux_loss(); };
    m.zero_grad();
    f();
    const Matrix<double> dx = m.backward(r);
    std::vector<Probe> probes;
    probes.push_back({"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())});
    moe::testing::add_parameter_probes(m, probes);
    auto res = check_gradients(f, probes);
    INFO(res.report << "worst: " << res.worst);
    return res.max_error;
}

}  // namespace

TEST_CASE("SparseMoE forward equals a naive per-token loop", "[sparse]") {
    for (Index k : {1, 2, 3}) {
        for (bool renorm : {true, false}) {
            SparseMoESpec s = small_spec(5, k);
            s.renormalize = renorm;
            s.router_bias = k == 2;
            s.activation = k == 3 ? ActivationKind::relu : ActivationKind::gelu;
            Model<SparseMoE<double>> m(s, 7);
            const Matrix<double> x = random_matrix(6, 40, 8);
            const Matrix<double> y = m.forward(x);
            CAPTURE(k, renorm);
            CHECK((y - naive_forward(m, x)).cwiseAbs().maxCoeff() < 1e-12);
        }
    }
}

TEST_CASE("SparseMoE with SwiGLU experts equals a naive per-token loop; names are Mixtral's", "[sparse][swiglu]") {
    SparseMoESpec s = small_spec(4, 2);
    s.expert = ExpertKind::swiglu;
    Model<SparseMoE<double>> m(s, 5);
    const Matrix<double> x = random_matrix(6, 30, 4);
    CHECK((Matrix<double>(m.forward(x)) - naive_forward(m, x)).cwiseAbs().maxCoeff() < 1e-12);
    std::vector<std::string> names;
    for (const auto& e : m.params().entries()) names.push_back(e.name);
    std::sort(names.begin(), names.end());  // the store lists stacked parameters layer by layer
    CHECK(names == std::vector<std::string>{"experts.0.w1.weight", "experts.0.w2.weight", "experts.0.w3.weight",
                                            "experts.1.w1.weight", "experts.1.w2.weight", "experts.1.w3.weight",
                                            "experts.2.w1.weight", "experts.2.w2.weight", "experts.2.w3.weight",
                                            "experts.3.w1.weight", "experts.3.w2.weight", "experts.3.w3.weight",
                                            "router.weight"});
    CHECK(gradcheck_sparse(s) < 1e-6);
}

TEST_CASE("SparseMoE expert-choice routing: each expert takes its top c tokens; naive loop, stats, gradients", "[sparse][expert_choice]") {
    for (double cf : {0.5, 1.0, 2.0, 9.0}) {  // 9: every expert takes every token (c clamped to N)
        for (auto policy : {DroppedTokens::zero, DroppedTokens::passthrough}) {
            CAPTURE(cf, policy == DroppedTokens::zero);
            SparseMoESpec s = small_spec(4, 2);
            s.routing = Routing::expert_choice;
            s.capacity_factor = cf;
            s.dropped = policy;
            s.expert = cf == 1.0 ? ExpertKind::swiglu : ExpertKind::mlp;
            Model<SparseMoE<double>> m(s, 3);
            const Matrix<double> x = random_matrix(6, 30, 6);
            CHECK((Matrix<double>(m.forward(x)) - naive_expert_choice(m, x)).cwiseAbs().maxCoeff() < 1e-12);
            const Index c = std::min<Index>(30, Index(std::ceil(cf * 30 / 4)));
            const RoutingStats& st = m.stats();
            for (std::size_t e = 0; e < 4; ++e) CHECK((st.kept[e] == c && st.routed[e] == c));
            CHECK(st.dropped == 0);
            // Tokens no expert took: at most N - c, none when every expert takes every token.
            CHECK(st.dropped_tokens <= 30 - c);
            if (cf == 9.0) CHECK(st.dropped_tokens == 0);
            if (cf == 0.5) CHECK(st.dropped_tokens >= 30 - 4 * c);
        }
    }
    {  // a huge capacity factor: every expert takes every token (top-k: dropless), no overflow
        SparseMoESpec huge = small_spec(4, 2);
        huge.routing = Routing::expert_choice;
        huge.capacity_factor = 1e300;
        Model<SparseMoE<double>> m(huge, 3);
        const Matrix<double> x = random_matrix(6, 30, 6);
        CHECK((Matrix<double>(m.forward(x)) - naive_expert_choice(m, x)).cwiseAbs().maxCoeff() < 1e-12);
        CHECK(m.stats().kept[0] == 30);
        huge.routing = Routing::top_k;
        Model<SparseMoE<double>> topk(huge, 3);
        CHECK((Matrix<double>(topk.forward(x)) - naive_forward(topk, x)).cwiseAbs().maxCoeff() < 1e-12);
        CHECK(topk.stats().dropped == 0);
    }
    {  // NaN tokens rank last for every expert (no undefined ordering); the others are routed as usual
        SparseMoESpec ec = small_spec(4, 2);
        ec.routing = Routing::expert_choice;
        ec.capacity_factor = 1.0;
        Model<SparseMoE<double>> m(ec, 3);
        Matrix<double> x = random_matrix(6, 30, 6);
        x.col(4).setConstant(std::nan(""));
        x.col(17)(2) = std::numeric_limits<double>::infinity();
        const Matrix<double> y = m.forward(x);
        for (Index e = 0; e < 4; ++e)
            for (Index r = 0; r < m.stats().kept[std::size_t(e)]; ++r) CHECK((m.choice(r, e) != 4 && m.choice(r, e) != 17));
        CHECK(y.col(0).allFinite());
    }
    SparseMoESpec s = small_spec(4, 2);
    s.routing = Routing::expert_choice;
    s.capacity_factor = 1.5;
    s.z_coef = 0.02;
    s.router_bias = true;
    CHECK(gradcheck_sparse(s) < 1e-6);
    s.dropped = DroppedTokens::passthrough;
    s.capacity_factor = 0.5;
    CHECK(gradcheck_sparse(s) < 1e-6);
}

TEST_CASE("SparseMoE with a capacity drops the later assignments; zero and passthrough", "[sparse]") {
    for (auto policy : {DroppedTokens::zero, DroppedTokens::passthrough}) {
        SparseMoESpec s = small_spec(4, 2);
        s.capacity_factor = 0.5;
        s.dropped = policy;
        Model<SparseMoE<double>> m(s, 2);
        const Matrix<double> x = random_matrix(6, 40, 9);
        const Matrix<double> y = m.forward(x);
        CHECK((y - naive_forward(m, x)).cwiseAbs().maxCoeff() < 1e-12);
        const RoutingStats& st = m.stats();
        Index kept = 0;
        for (std::size_t e = 0; e < st.kept.size(); ++e) {
            CHECK(st.kept[e] <= 10);  // ceil(0.5 * 40 * 2 / 4)
            kept += st.kept[e];
        }
        CHECK(st.dropped == 80 - kept);
        CHECK(st.dropped > 0);
    }
}

TEST_CASE("SparseMoE with k = E is the dense softmax-weighted layer", "[sparse]") {
    SparseMoESpec s = small_spec(4, 4);
    Model<SparseMoE<double>> m(s, 3);
    REQUIRE(m.dense());
    const Matrix<double> x = random_matrix(6, 20, 4);
    const Matrix<double> y = m.forward(x);
    // Dense: every expert on every token, weighted by the full softmax.
    auto& ps = m.params();
    const Matrix<double> logits = Matrix<double>(ps.value("router.weight")) * x;
    Matrix<double> dense = Matrix<double>::Zero(6, 20);
    for (Index t = 0; t < 20; ++t) {
        Vector<double> p = (logits.col(t).array() - logits.col(t).maxCoeff()).exp();
        p /= p.sum();
        for (Index e = 0; e < 4; ++e) {
            const std::string ex = "experts." + std::to_string(e);
            Vector<double> h = Matrix<double>(ps.value(ex + ".0.weight")) * x.col(t) + Matrix<double>(ps.value(ex + ".0.bias")).col(0);
            for (Index i = 0; i < h.size(); ++i) h(i) = act(ActivationKind::gelu, h(i));
            dense.col(t) += p(e) * (Matrix<double>(ps.value(ex + ".2.weight")) * h + Matrix<double>(ps.value(ex + ".2.bias")).col(0));
        }
    }
    CHECK((y - dense).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("SparseMoE gradients: every gate, the noise, the capacity path, every aux loss", "[sparse][gradcheck]") {
    constexpr double tol = 1e-6;
    SECTION("top-1 without renormalisation (Switch)") {
        SparseMoESpec s = small_spec(4, 1);
        s.renormalize = false;
        CHECK(gradcheck_sparse(s) < tol);
    }
    SECTION("top-2 renormalised (Mixtral), router bias, relu experts") {
        SparseMoESpec s = small_spec(5, 2);
        s.router_bias = true;
        s.activation = ActivationKind::relu;
        CHECK(gradcheck_sparse(s) < tol);
    }
    SECTION("top-2 without renormalisation") {
        SparseMoESpec s = small_spec(5, 2);
        s.renormalize = false;
        CHECK(gradcheck_sparse(s) < tol);
    }
    SECTION("dense, k = E") { CHECK(gradcheck_sparse(small_spec(3, 3)) < tol); }
    SECTION("noisy top-2 with a fixed draw, and the load loss") {
        SparseMoESpec s = small_spec(5, 2);
        s.noisy = true;
        s.load_coef = 0.7;
        CHECK(gradcheck_sparse(s) < tol);
    }
    SECTION("capacity with dropped tokens, zero and passthrough") {
        for (auto policy : {DroppedTokens::zero, DroppedTokens::passthrough}) {
            SparseMoESpec s = small_spec(4, 2);
            s.capacity_factor = 0.4;
            s.dropped = policy;
            CHECK(gradcheck_sparse(s, 16) < tol);
        }
    }
    SECTION("each aux loss alone, then all together") {
        for (int which = 0; which < 4; ++which) {
            SparseMoESpec s = small_spec(5, 2);
            s.noisy = which == 3;
            s.balance_coef = which == 0 ? 0.5 : 0.0;
            s.importance_coef = which == 1 ? 0.5 : 0.0;
            s.z_coef = which == 2 ? 0.3 : 0.0;
            s.load_coef = which == 3 ? 0.5 : 0.0;
            CAPTURE(which);
            CHECK(gradcheck_sparse(s) < tol);
        }
        SparseMoESpec s = small_spec(6, 2);
        s.noisy = true;
        s.renormalize = false;
        s.balance_coef = 0.3;
        s.importance_coef = 0.2;
        s.load_coef = 0.2;
        s.z_coef = 0.1;
        CHECK(gradcheck_sparse(s) < tol);
    }
}

TEST_CASE("Aux losses: values on known cases and gradients", "[sparse][aux]") {
    // Uniform router and uniform load: the Switch loss is 1.
    Matrix<double> p = Matrix<double>::Constant(4, 8, 0.25);
    CHECK(switch_balance_loss<double>(p, {4, 4, 4, 4}, 2, 0.0, nullptr) == Approx(1.0));
    // Everything on expert 0 with all probability there: E * 1 * 1 = 4.
    Matrix<double> q = Matrix<double>::Zero(4, 8);
    q.row(0).setOnes();
    CHECK(switch_balance_loss<double>(q, {8, 0, 0, 0}, 1, 0.0, nullptr) == Approx(4.0));
    // CV^2 of (1, 3): mean 2, variance 1 -> 0.25.
    CHECK(cv_squared({1.0, 3.0}, 0.0, nullptr) == Approx(0.25));
    CHECK(cv_squared({2.0, 2.0, 2.0}, 0.0, nullptr) == 0.0);
    // z-loss of zero logits over E experts: log(E)^2.
    Matrix<double> z = Matrix<double>::Zero(4, 3);
    CHECK(router_z_loss<double>(z, 0.0, nullptr) == Approx(std::log(4.0) * std::log(4.0)));
    // Gradients of each against central differences.
    Matrix<double> logits = random_matrix(4, 5, 1) * 3;
    Matrix<double> grad = Matrix<double>::Zero(4, 5);
    MatrixView<double> gv(grad.data(), 4, 5);
    router_z_loss<double>(logits, 1.0, &gv);
    std::vector<Probe> probes{{"logits", logits.data(), std::vector<double>(grad.data(), grad.data() + grad.size())}};
    CHECK(check_gradients([&] { return router_z_loss<double>(logits, 0.0, nullptr); }, probes).max_error < 1e-6);
    std::vector<double> v{0.5, 2.0, 1.25}, dv(3, 0.0);
    cv_squared(v, 1.0, &dv);
    std::vector<Probe> vp{{"v", v.data(), dv}};
    CHECK(check_gradients([&] { return cv_squared(v, 0.0, nullptr); }, vp).max_error < 1e-6);
}

TEST_CASE("SparseMoE diagnostics: all tokens routed to one expert still works and shows", "[sparse]") {
    SparseMoESpec s = small_spec(4, 1);
    s.router_bias = true;
    Model<SparseMoE<double>> m(s, 5);
    m.params().value("router.weight").setZero();
    m.params().value("router.bias")(2, 0) = 10.0;
    const Matrix<double> x = random_matrix(6, 30, 6);
    const Matrix<double> y = m.forward(x);
    CHECK((y - naive_forward(m, x)).cwiseAbs().maxCoeff() < 1e-12);
    const RoutingStats& st = m.stats();
    CHECK(st.routed == std::vector<Index>{0, 0, 30, 0});
    CHECK(st.dead_experts == 3);
    CHECK(st.load_balance == Approx(4.0));
    CHECK(st.balance_loss > 3.9);  // E * f_2 * P_2 with P_2 close to 1
    CHECK(st.entropy < 0.01);
    CHECK_THAT(st.table(), Contains("3 dead experts"));
    Matrix<double> g = random_matrix(6, 30, 7);
    CHECK(m.backward(g).allFinite());
}

TEST_CASE("SparseMoE: bad configurations and inputs are clear errors", "[sparse][errors]") {
    SparseMoESpec s = small_spec(4, 0);
    CHECK_THROWS_WITH(SparseMoE<double>(s), Contains("k must be in [1, experts = 4], got 0"));
    s.k = 5;
    CHECK_THROWS_WITH(SparseMoE<double>(s), Contains("got 5"));
    s.k = 2;
    s.capacity_factor = -1;
    CHECK_THROWS_WITH(SparseMoE<double>(s), Contains("capacity_factor must be positive"));
    s.capacity_factor = 0;
    s.load_coef = 0.1;
    CHECK_THROWS_WITH(SparseMoE<double>(s), Contains("needs a noisy router"));
    s.load_coef = 0;
    s.experts = 0;
    CHECK_THROWS_AS(SparseMoE<double>(s), config_error);
    Model<SparseMoE<double>> m(small_spec(4, 2), 1);
    CHECK_THROWS_AS(m.forward(random_matrix(5, 3, 1)), shape_error);
    m.forward(random_matrix(6, 3, 1));
    CHECK_THROWS_AS(m.backward(random_matrix(6, 4, 1)), shape_error);
}

// ---- sparse MMoE: top-k task gates inside a multi-task model -----------------------------------

namespace {
SparseMMoESpec sparse_mmoe_spec(Index k) {
    SparseMMoESpec s;
    s.input = 6;
    s.experts = 4;
    s.expert_hidden = {8};
    s.expert_dim = 5;
    s.tower_hidden = {4};
    s.k = k;
    s.tasks = {binary_task("click"), regression_task("watch"), multiclass_task("rating", 3)};
    return s;
}

/// An MMoE with the same parameters (they share names).
Model<MMoE<double>> dense_twin(Model<SparseMMoE<double>>& sparse) {
    MMoESpec d = sparse.spec();
    Model<MMoE<double>> m(d, 99);
    for (const auto& e : m.params().entries()) m.params().value(e.name) = sparse.params().value(e.name);
    return m;
}

Matrix<double> mmoe_labels(Index batch) {
    Rng rng(5);
    Matrix<double> y(3, batch);
    for (Index j = 0; j < batch; ++j) y.col(j) << double(rng.below(2)), rng.uniform(0.0, 2.0), double(rng.below(3));
    return y;
}
}  // namespace

TEST_CASE("Sparse MMoE with k = E is the MMoE", "[sparse][mmoe]") {
    Model<SparseMMoE<double>> sparse(sparse_mmoe_spec(4), 1);
    auto dense = dense_twin(sparse);
    const Matrix<double> x = random_matrix(6, 12, 2);
    const auto& a = sparse.forward(x);
    const auto& b = dense.forward(x);
    for (std::size_t t = 0; t < 3; ++t) CHECK((Matrix<double>(a[t]) - Matrix<double>(b[t])).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("Sparse MMoE mixes each task's top k and runs experts only on routed samples", "[sparse][mmoe]") {
    for (bool renorm : {true, false}) {
        SparseMMoESpec s = sparse_mmoe_spec(2);
        s.renormalize = renorm;
        Model<SparseMMoE<double>> sparse(s, 3);
        auto dense = dense_twin(sparse);
        const Matrix<double> x = random_matrix(6, 30, 4);
        sparse.forward(x);
        dense.forward(x);
        const Matrix<double> o = dense.last_expert_outputs();  // (E D) x B, every expert on every sample
        const Matrix<double> p = dense.last_gate_probabilities();
        const Matrix<double> m = sparse.last_mixture();
        double err = 0;
        for (Index j = 0; j < 30; ++j)
            for (Index g = 0; g < 3; ++g) {
                std::vector<Index> idx{0, 1, 2, 3};
                std::stable_sort(idx.begin(), idx.end(), [&](Index u, Index v) { return p(g * 4 + u, j) > p(g * 4 + v, j); });
                const double sum = p(g * 4 + idx[0], j) + p(g * 4 + idx[1], j);
                Vector<double> want = Vector<double>::Zero(5);
                for (int r = 0; r < 2; ++r)
                    want += (renorm ? p(g * 4 + idx[std::size_t(r)], j) / sum : p(g * 4 + idx[std::size_t(r)], j)) *
                            o.block(idx[std::size_t(r)] * 5, j, 5, 1);
                err = std::max(err, (m.block(g * 5, j, 5, 1) - want).cwiseAbs().maxCoeff());
            }
        CHECK(err < 1e-12);
        Index runs = 0;
        for (Index e = 0; e < 4; ++e) runs += sparse.expert_samples(e);
        CHECK(runs < 4 * 30);  // not every expert on every sample
        CHECK(runs >= 2 * 30);  // each sample runs on at least its k experts
    }
}

TEST_CASE("Sparse MMoE gradients: top-1 and top-2, both weightings, masks, dropout, gate MLP", "[sparse][mmoe][gradcheck]") {
    for (int variant = 0; variant < 4; ++variant) {
        SparseMMoESpec s = sparse_mmoe_spec(variant == 0 ? 1 : 2);
        s.renormalize = variant != 2;
        if (variant == 3) {
            s.gate_hidden = {5};
            s.expert_dropout = 0.2;
            s.tower_dropout = 0.2;
        }
        Model<SparseMMoE<double>> model(s, 4);
        model.train();
        model.for_each_dropout([](Dropout<double>& d) { d.freeze_mask(true); });
        MultiTaskLoss<double> loss(s.tasks);
        Matrix<double> x = random_matrix(6, 10, 6);
        const Matrix<double> y = mmoe_labels(10);
        Matrix<double> mask = Matrix<double>::Ones(3, 10);
        for (Index j = 0; j < 10; j += 3) mask(1, j) = 0;
        auto f = [&] { return loss.forward(model.forward(x), y, mask); };
        model.zero_grad();
        f();
        const Matrix<double> dx = model.backward(loss.backward(), true);
        std::vector<Probe> probes{{"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())}};
        moe::testing::add_parameter_probes(model, probes);
        const auto r = check_gradients(f, probes);
        CAPTURE(variant);
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
    }
}

TEST_CASE("Sparse MMoE: predict equals the heads of forward, fit trains it, bad settings refused", "[sparse][mmoe]") {
    SparseMMoESpec s = sparse_mmoe_spec(2);
    Model<SparseMMoE<double>> model(s, 5);
    model.eval();
    const Matrix<double> x = random_matrix(6, 300, 7);
    const Matrix<double> click = model.forward(x)[0];
    InferenceWorkspace<double> ws;
    const auto& pred = model.predict(x, ws);
    const Matrix<double> sig = (1.0 / (1.0 + (-click.array()).exp())).matrix();
    CHECK((Matrix<double>(pred[0]) - sig).cwiseAbs().maxCoeff() < 1e-12);

    MultiTaskData<double> data;
    data.x = random_matrix(6, 512, 8);
    data.labels = mmoe_labels(512);
    data.labels.row(0) = (data.x.row(0).array() > 0).cast<double>().matrix();
    MultiTaskLoss<double> loss(s.tasks);
    FitOptions o;
    o.epochs = 5;
    o.batch_size = 64;
    o.lr = 1e-2;
    o.progress = Progress::silent;
    const auto h = fit(model, loss, data, nullptr, o);
    CHECK(h.epochs.back().train_loss < h.epochs.front().train_loss);

    s.k = 5;
    CHECK_THROWS_WITH(SparseMMoE<double>(s), Contains("k must be in [1, experts = 4], got 5"));
    s.k = 2;
    s.batchnorm = true;
    CHECK_THROWS_WITH(SparseMMoE<double>(s), Contains("batchnorm is not supported"));
    s.batchnorm = false;
    s.shared_gate = true;
    CHECK_THROWS_AS(SparseMMoE<double>(s), config_error);
    s.shared_gate = false;
    Model<SparseMMoE<double>> ok(s, 1);
    CHECK_THROWS_AS(ok.forward(random_matrix(5, 4, 1)), shape_error);
}

}  // namespace test_sparse_moe
