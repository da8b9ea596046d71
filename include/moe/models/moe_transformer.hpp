#pragma once
// A decoder-only language model of MoETransformerLayers: token and learned position embeddings, N
// pre-norm layers, a final norm and an LM head (tied to the token embedding or its own).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <optional>

#include "moe/core/parameters.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/models/moe_transformer_layer.hpp"

namespace moe {

/// Configuration of a MoETransformer, checked when it is built.
struct MoETransformerSpec {
    Index vocab = 0;          ///< token ids 0 .. vocab - 1
    Index max_positions = 0;  ///< the longest sequence (learned positions)
    Index layers = 1;
    bool tied_head = false;   ///< the LM head is the token embedding's transpose
    MoETransformerLayerSpec layer;  ///< every layer's (dim, heads, norm, ffn, experts, ...)
};

/// Shapes: tokens are B sequences of S ids, flat and batch-first (sequence b is tokens[b S, (b+1) S));
/// forward gives the logits, vocab x (B S), column t the next-token logits after token t.
/// Parameters: "tok_emb.weight" (vocab x dim), "pos_emb.weight" (max_positions x dim),
/// "layers.{l}.*" (MoETransformerLayer's names), "norm.*", and "head.weight" (vocab x dim) unless
/// tied. Embeddings N(0, 0.02^2) at init, the head U(-1/sqrt(dim), 1/sqrt(dim)).
template <class T>
class MoETransformer {
public:
    using Scalar = T;
    using Spec = MoETransformerSpec;

    explicit MoETransformer(const MoETransformerSpec& spec, std::string name = "moe::MoETransformer")
        : spec_(checked(spec, name)), name_(std::move(name)), tok_(spec.vocab, spec.layer.dim), pos_(spec.max_positions, spec.layer.dim),
          head_(spec.tied_head ? 0 : spec.vocab, spec.layer.dim) {
        layers_.reserve(std::size_t(spec.layers));
        for (Index l = 0; l < spec.layers; ++l) layers_.emplace_back(spec.layer, name_ + ".layers." + std::to_string(l));
        if (spec.layer.norm == NormKind::layer_norm) layer_norm_.emplace(spec.layer.dim, spec.layer.norm_eps, true, name_ + ".norm");
        else rms_norm_.emplace(spec.layer.dim, spec.layer.norm_eps, name_ + ".norm");
    }

    const MoETransformerSpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }
    MoETransformerLayer<T>& layer(Index l) { return layers_.at(std::size_t(l)); }
    /// The MoE layers' aux losses of the last forward, summed.
    double aux_loss() const {
        double a = 0;
        for (const auto& l : layers_) a += l.aux_loss();
        return a;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "tok_emb.weight"), tok_);
        f(join_name(prefix, "pos_emb.weight"), pos_);
        for (std::size_t l = 0; l < layers_.size(); ++l) layers_[l].for_each_parameter(join_name(prefix, "layers." + std::to_string(l)), f);
        if (layer_norm_) layer_norm_->for_each_parameter(join_name(prefix, "norm"), f);
        else rms_norm_->for_each_parameter(join_name(prefix, "norm"), f);
        if (!spec_.tied_head) f(join_name(prefix, "head.weight"), head_);
    }
    void reset_parameters(Rng& rng) {
        for (Param<T>* p : {&tok_, &pos_})
            for (Index i = 0; i < p->value.size(); ++i) p->value.data()[i] = T(0.02 * rng.normal());
        const double b = 1.0 / std::sqrt(double(spec_.layer.dim));
        for (Index i = 0; i < head_.value.size(); ++i) head_.value.data()[i] = T(rng.uniform(-b, b));
        for (auto& l : layers_) l.reset_parameters(rng);
        if (layer_norm_) layer_norm_->reset_parameters(rng);
        else rms_norm_->reset_parameters(rng);
    }
    void set_training(bool on) {
        for (auto& l : layers_) l.set_training(on);
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }
    template <class F>
    void for_each_dropout(F&&) {}  // attention dropout is MultiheadAttention's own: freeze_dropout
    /// Keep every layer's attention dropout mask of the last forward (for gradient checks).
    void freeze_dropout(bool on) {
        for (auto& l : layers_) l.freeze_dropout(on);
    }

    /// Logits (vocab x B S) of B sequences of seq_len tokens. Token ids are checked (config_error
    /// naming the position and the id), seq_len against max_positions. `tokens` must stay alive
    /// until backward.
    const MatrixView<T>& forward(const std::vector<std::int64_t>& tokens, Index seq_len) {
        check(tokens, seq_len);
        tokens_ = &tokens;
        seq_ = seq_len;
        const Index n = Index(tokens.size()), d = spec_.layer.dim;
        auto& x = x_.resize(d, n);
        for (Index t = 0; t < n; ++t) x.col(t) = (tok_.value.row(tokens[std::size_t(t)]) + pos_.value.row(t % seq_len)).transpose();
        ConstView<T> h = x;
        for (auto& l : layers_) h = l.forward(h, seq_len);
        const MatrixView<T>& z = layer_norm_ ? layer_norm_->forward(h) : rms_norm_->forward(h);
        auto& logits = logits_.resize(spec_.vocab, n);
        detail::matmul<T>(logits, head().value_t(), true, z, false);
        return logits;
    }

    /// Adds every parameter's gradient from dlogits (vocab x B S) and the layers' aux losses.
    void backward(const ConstView<T>& dlogits) {
        detail::require(tokens_ != nullptr, name_, "::backward: no forward before it");
        detail::check_shape(dlogits, spec_.vocab, Index(tokens_->size()), name_, "backward", "logits gradient");
        const auto& z = layer_norm_ ? layer_norm_->output() : rms_norm_->output();
        auto dhead = head().grad_t();  // dW^T = z dlogits^T
        detail::matmul<T>(dhead, z, false, dlogits, true, true);
        auto& dz = dz_.resize(spec_.layer.dim, dlogits.cols());
        detail::matmul<T>(dz, head().value_t(), false, dlogits, false);
        ConstView<T> g = layer_norm_ ? layer_norm_->backward(dz) : rms_norm_->backward(dz);
        for (std::size_t l = layers_.size(); l-- > 0;) g = layers_[l].backward(g);
        for (Index t = 0; t < g.cols(); ++t) {
            tok_.grad.row((*tokens_)[std::size_t(t)]) += g.col(t).transpose();
            pos_.grad.row(t % seq_) += g.col(t).transpose();
        }
    }

    /// The KV caches of every layer for incremental decoding of B sequences.
    struct Cache {
        std::vector<typename MultiheadAttention<T>::Cache> layers;
        Index length() const { return layers.empty() ? 0 : layers.front().length; }
    };
    /// A cache for B sequences of up to max_positions tokens.
    Cache make_cache(Index sequences) const {
        detail::require(sequences > 0, name_, "::make_cache: sequences must be positive, got ", sequences);
        Cache c;
        c.layers.resize(layers_.size());
        for (auto& l : c.layers) l.reset(spec_.layer.dim, sequences, spec_.max_positions);
        return c;
    }

    /// Incremental decoding (evaluation semantics): the next token of each of B sequences (one id
    /// each) at position cache.length(); returns the next-token logits (vocab x B), equal to
    /// forward's at that position. Generation calls it once per token instead of running the whole
    /// window again.
    const MatrixView<T>& decode(const std::vector<std::int64_t>& next, Cache& cache) {
        detail::require(cache.layers.size() == layers_.size(), name_, "::decode: a cache of ", cache.layers.size(), " layers for ",
                        layers_.size(), " (make it with make_cache)");
        detail::require(Index(next.size()) == cache.layers.front().batch, name_, "::decode: ", next.size(), " tokens for ",
                        cache.layers.front().batch, " sequences");
        const Index pos = cache.length(), d = spec_.layer.dim;
        detail::require(pos < spec_.max_positions, name_, "::decode: position ", pos, " is beyond max_positions ", spec_.max_positions);
        for (std::size_t t = 0; t < next.size(); ++t)
            detail::require(next[t] >= 0 && next[t] < spec_.vocab, name_, ": token ", next[t], " of sequence ", t,
                            " is outside the vocabulary of ", spec_.vocab);
        auto& x = x_.resize(d, Index(next.size()));
        for (Index b = 0; b < x.cols(); ++b) x.col(b) = (tok_.value.row(next[std::size_t(b)]) + pos_.value.row(pos)).transpose();
        ConstView<T> h = x;
        for (std::size_t l = 0; l < layers_.size(); ++l) h = layers_[l].decode(h, cache.layers[l]);
        const MatrixView<T>& z = layer_norm_ ? layer_norm_->infer(h, z_) : rms_norm_->infer(h, z_);
        auto& logits = logits_.resize(spec_.vocab, x.cols());
        detail::matmul<T>(logits, head().value_t(), true, z, false);
        return logits;
    }

private:
    Param<T>& head() { return spec_.tied_head ? tok_ : head_; }

    void check(const std::vector<std::int64_t>& tokens, Index seq_len) const {
        detail::require(seq_len > 0 && seq_len <= spec_.max_positions, name_, ": seq_len ", seq_len, " is outside 1 ..",
                        spec_.max_positions, " (max_positions)");
        detail::require(!tokens.empty() && Index(tokens.size()) % seq_len == 0, name_, ": ", tokens.size(),
                        " tokens are not whole sequences of ", seq_len);
        for (std::size_t t = 0; t < tokens.size(); ++t)
            detail::require(tokens[t] >= 0 && tokens[t] < spec_.vocab, name_, ": token ", tokens[t], " at position ", t,
                            " is outside the vocabulary of ", spec_.vocab);
    }
    static const MoETransformerSpec& checked(const MoETransformerSpec& s, const std::string& name) {
        detail::require(s.vocab > 0 && s.max_positions > 0 && s.layers > 0, name, ": vocab, max_positions and layers must be positive, got ",
                        s.vocab, ", ", s.max_positions, " and ", s.layers);
        detail::require(s.layer.dim > 0, name, ": layer.dim must be positive, got ", s.layer.dim);
        return s;
    }

    MoETransformerSpec spec_;
    std::string name_;
    Param<T> tok_, pos_, head_;
    std::vector<MoETransformerLayer<T>> layers_;
    std::optional<LayerNorm<T>> layer_norm_;
    std::optional<RMSNorm<T>> rms_norm_;
    const std::vector<std::int64_t>* tokens_ = nullptr;
    Index seq_ = 0;
    Buffer<T> x_, logits_, dz_, z_;
};

}  // namespace moe
