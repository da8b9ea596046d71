#pragma once
// The Transformer layer of sparse language models (Switch, Mixtral), pre-norm:
//
//   h = x + attn(norm1(x)),   y = h + ffn(norm2(h))
//
// where ffn is a dense MLP (dim -> ffn -> dim) or a SparseMoE of top-k experts, whose auxiliary
// losses (load balancing, z-loss) are the layer's aux_loss() and part of its backward.
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/layer_norm.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/layers/multihead_attention.hpp"
#include "moe/models/sparse_moe.hpp"

namespace moe {

enum class NormKind { layer_norm, rms_norm };

/// Configuration of a MoETransformerLayer, checked when it is built.
struct MoETransformerLayerSpec {
    Index dim = 0;                   ///< d, the width of a token
    Index heads = 1;                 ///< attention heads, dividing d
    bool causal = true;              ///< a language model's mask: token i sees tokens j <= i
    double attention_dropout = 0.0;  ///< on the attention weights, in training
    NormKind norm = NormKind::layer_norm;
    double norm_eps = 1e-5;
    Index ffn = 0;                   ///< hidden width of the feed-forward (of each expert)
    ActivationKind activation = ActivationKind::gelu;
    /// MLP (Linear, activation, Linear) or SwiGLU (w1, w2, w3, no biases) feed-forwards: the dense
    /// one, the routed experts and the shared experts alike.
    ExpertKind expert = ExpertKind::mlp;
    /// experts = 0: a dense feed-forward; > 0: a SparseMoE of these experts (moe.k, routing and aux
    /// losses from `moe`; its dim, experts, ffn and activation are taken from here).
    Index experts = 0;
    SparseMoESpec moe;
    /// Shared experts (DeepSeekMoE): with experts > 0, this many feed-forwards of width ffn that every
    /// token goes through next to its routed ones, added to their output. Built as one MLP of width
    /// shared_experts x ffn ("shared.0.*", "shared.2.*"): the same function as separate experts summed.
    Index shared_experts = 0;
};

/// One pre-norm Transformer layer. Shapes: x and y are d x (B S): B sequences of S tokens, tokens as
/// columns, sequences contiguous (see MultiheadAttention). Parameters: "norm1.*", "attn.*"
/// (nn.MultiheadAttention's names), "norm2.*", and "ffn.0.*", "ffn.2.*" (dense: nn.Sequential(Linear,
/// act, Linear); SwiGLU: "ffn.w1.weight", "ffn.w2.weight", "ffn.w3.weight") or "ffn.router.*",
/// "ffn.experts.{e}.*" (SparseMoE), and "shared.*" with shared experts.
template <class T>
class MoETransformerLayer : public Composite<MoETransformerLayer<T>> {
public:
    using Scalar = T;
    using Spec = MoETransformerLayerSpec;

    explicit MoETransformerLayer(const MoETransformerLayerSpec& spec, std::string name = "moe::MoETransformerLayer")
        : spec_(checked(spec, name)), name_(std::move(name)),
          attn_(spec.dim, spec.heads, spec.attention_dropout, spec.causal, name_ + ".attn") {
        for (auto* n : {&norm1_, &norm2_}) {
            if (spec.norm == NormKind::layer_norm) n->layer.emplace(spec.dim, spec.norm_eps, true, name_ + ".norm");
            else n->rms.emplace(spec.dim, spec.norm_eps, name_ + ".norm");
        }
        if (spec.experts == 0) {
            dense_.emplace(spec, spec.ffn, name_ + ".ffn");
        } else {
            SparseMoESpec m = spec.moe;
            m.dim = spec.dim;
            m.experts = spec.experts;
            m.ffn = spec.ffn;
            m.activation = spec.activation;
            m.expert = spec.expert;
            sparse_.emplace(m, name_ + ".ffn");
            if (spec.shared_experts > 0) shared_.emplace(spec, spec.shared_experts * spec.ffn, name_ + ".shared");
        }
    }

    const MoETransformerLayerSpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }
    /// The feed-forward's auxiliary losses of the last forward (0 for a dense one).
    double aux_loss() const { return sparse_ ? sparse_->aux_loss() : 0.0; }
    /// Keep the attention's dropout mask of the last forward (for gradient checks); off by default.
    void freeze_dropout(bool on) { attn_.freeze_mask(on); }
    /// The SparseMoE (its routing statistics), or null for a dense feed-forward.
    const SparseMoE<T>* sparse_ffn() const { return sparse_ ? &*sparse_ : nullptr; }

    template <class F>
    void for_each_child(F&& f) {
        norm1_.visit([&](auto& n) { f("norm1", n); });
        f("attn", attn_);
        norm2_.visit([&](auto& n) { f("norm2", n); });
        if (dense_) dense_->visit([&](auto& m) { f("ffn", m); });
        else f("ffn", *sparse_);
        if (shared_) shared_->visit([&](auto& m) { f("shared", m); });
    }

    /// Training forward of B sequences of seq_len tokens; key_padding as MultiheadAttention's. x must
    /// stay alive and unchanged until backward.
    const MatrixView<T>& forward(const ConstView<T>& x, Index seq_len, const std::vector<std::uint8_t>& key_padding = {}) {
        detail::check_rows(x, spec_.dim, name_, "forward");
        const MatrixView<T>& a = attn_.forward(norm1_.forward(x), seq_len, key_padding);
        auto& h = h_.resize(x.rows(), x.cols());
        h = x + a;
        const MatrixView<T>& n = norm2_.forward(h);
        const MatrixView<T>& f = dense_ ? dense_->forward(n) : sparse_->forward(n);
        auto& y = y_.resize(x.rows(), x.cols());
        y = h + f;
        if (shared_) y += shared_->forward(n);
        return y;
    }

    /// dx from dy; adds every parameter's gradient (and the aux losses' through the SparseMoE).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, spec_.dim, h_.view().cols(), name_, "backward", "output gradient");
        const MatrixView<T>* df = dense_ ? &dense_->backward(dy) : &sparse_->backward(dy);
        if (shared_) {
            auto& both = dn_.resize(dy.rows(), dy.cols());
            both = *df;
            both += shared_->backward(dy);
            df = &both;
        }
        auto& dh = dh_.resize(dy.rows(), dy.cols());
        dh = dy;
        dh += norm2_.backward(*df);
        const MatrixView<T>& da = attn_.backward(dh);
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        dx = dh;
        dx += norm1_.backward(da);
        return dx;
    }

    const MatrixView<T>& output() const { return y_.view(); }

    /// Incremental decoding of the next token of B sequences (dim x B), evaluation semantics, with
    /// this layer's KV cache (see MultiheadAttention::decode).
    const MatrixView<T>& decode(const ConstView<T>& x, typename MultiheadAttention<T>::Cache& cache) {
        detail::check_rows(x, spec_.dim, name_, "decode");
        const MatrixView<T>& a = attn_.decode(norm1_.infer(x, n1_), cache);
        auto& h = h_.resize(x.rows(), x.cols());
        h = x + a;
        const MatrixView<T>& n = norm2_.infer(h, n2_);
        const MatrixView<T>& f = dense_ ? dense_->infer(n, fa_, fb_) : sparse_->forward(n);
        auto& y = y_.resize(x.rows(), x.cols());
        y = h + f;
        if (shared_) y += shared_->infer(n, fa_, fb_);
        return y;
    }

private:
    /// A dense feed-forward d -> width -> d: an MLP or a SwiGLU, chosen by the spec.
    struct FeedForward {
        std::optional<MLP<T>> mlp;
        std::optional<SwiGLU<T>> glu;
        FeedForward(const MoETransformerLayerSpec& s, Index width, const std::string& name) {
            if (s.expert == ExpertKind::mlp) mlp.emplace(make_mlp_spec(s.dim, {width}, s.dim, s.activation, false, 0.0, false), name);
            else glu.emplace(s.dim, width, 1, name);
        }
        template <class F>
        void visit(F&& f) {
            if (mlp) f(*mlp);
            else f(*glu);
        }
        const MatrixView<T>& forward(const ConstView<T>& x) { return mlp ? mlp->forward(x) : glu->forward(x); }
        const MatrixView<T>& backward(const ConstView<T>& dy) { return mlp ? mlp->backward(dy, true) : glu->backward(dy, true); }
        /// Evaluation semantics (the SwiGLU has no train/eval difference: its forward is its infer).
        const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b) {
            return mlp ? mlp->infer(x, a, b) : glu->forward(x);
        }
    };
    /// A LayerNorm or an RMSNorm, chosen by the spec.
    struct Norm {
        std::optional<LayerNorm<T>> layer;
        std::optional<RMSNorm<T>> rms;
        template <class F>
        void visit(F&& f) {
            if (layer) f(*layer);
            else f(*rms);
        }
        const MatrixView<T>& forward(const ConstView<T>& x) { return layer ? layer->forward(x) : rms->forward(x); }
        const MatrixView<T>& backward(const ConstView<T>& dy) { return layer ? layer->backward(dy) : rms->backward(dy); }
        const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const { return layer ? layer->infer(x, out) : rms->infer(x, out); }
    };

    static const MoETransformerLayerSpec& checked(const MoETransformerLayerSpec& s, const std::string& name) {
        detail::require(s.dim > 0, name, ": dim must be positive, got ", s.dim);
        detail::require(s.ffn > 0, name, ": ffn must be positive, got ", s.ffn);
        detail::require(s.experts >= 0, name, ": experts must be >= 0 (0: a dense feed-forward), got ", s.experts);
        detail::require(s.shared_experts >= 0 && (s.shared_experts == 0 || s.experts > 0), name,
                        ": shared_experts must be >= 0 and need routed experts (experts > 0), got ", s.shared_experts, " with ",
                        s.experts, " experts");
        return s;
    }

    MoETransformerLayerSpec spec_;
    std::string name_;
    Norm norm1_, norm2_;
    MultiheadAttention<T> attn_;
    std::optional<FeedForward> dense_;
    std::optional<SparseMoE<T>> sparse_;
    std::optional<FeedForward> shared_;
    Buffer<T> h_, dh_, dn_, y_, dx_, n1_, n2_, fa_, fb_;
};

}  // namespace moe
