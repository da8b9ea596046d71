#pragma once
// SparseAdam for embedding tables: torch.optim.SparseAdam's update on the rows a batch touched.
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/table_memory.hpp"
#include "moe/core/types.hpp"
#include "moe/layers/row_sparse.hpp"

namespace moe {

/// torch.optim.SparseAdam's settings (its defaults).
struct SparseAdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
};

/// Adam on the touched rows of one table, as torch.optim.SparseAdam: the moments of a row change
/// only in the steps that touch it (m += (1 - beta1)(g - m), v += (1 - beta2)(g^2 - v)), the bias
/// corrections count every step. Moments are dim x rows like the table. A step costs O(touched
/// rows x dim), whatever the table's size.
template <class T>
class SparseAdam {
public:
    using Options = SparseAdamOptions;

    SparseAdam(Index rows, Index dim, SparseAdamOptions o = {}) : o_(o) {
        detail::require(rows > 0 && dim > 0, "moe::SparseAdam: rows and dim must be positive, got ", rows, " x ", dim);
        detail::require(o.lr >= 0 && std::isfinite(o.lr), "moe::SparseAdam: lr must be finite and >= 0, got ", o.lr);
        detail::require(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
                        "moe::SparseAdam: betas must be in [0, 1), got ", o.beta1, ", ", o.beta2);
        detail::require(o.eps > 0, "moe::SparseAdam: eps must be > 0, got ", o.eps);
        m_ = detail::table_matrix<T>(dim, rows, T(0));
        v_ = detail::table_matrix<T>(dim, rows, T(0));
    }
    /// For an EmbeddingBag or Embedding.
    template <class Table>
    explicit SparseAdam(const Table& table, SparseAdamOptions o = {}) : SparseAdam(table.rows(), table.dim(), o) {}

    /// One step of `table` (dim x rows) with the row-sparse gradient g (rows sorted and unique, as
    /// EmbeddingBag::backward gives). Checks g against the table first: an error changes nothing.
    void step(Matrix<T>& table, const RowSparseGrad<T>& g) {
        detail::check_row_sparse_grad(table, g, m_.cols(), m_.rows(), "moe::SparseAdam::step");
        const auto& gv = g.values.view();
        ++steps_;
        const double bc1 = 1 - std::pow(o_.beta1, double(steps_)), bc2 = 1 - std::pow(o_.beta2, double(steps_));
        const T step_size = T(o_.lr * std::sqrt(bc2) / bc1);
        const T a1 = T(1 - o_.beta1), a2 = T(1 - o_.beta2), eps = T(o_.eps);
        const Index dim = m_.rows();
        for (std::size_t j = 0; j < g.rows.size(); ++j) {
            const Index r = Index(g.rows[j]);
            if (j + detail::kPrefetchAhead < g.rows.size()) {  // rows far apart in a big table: ask early
                const Index ahead = Index(g.rows[j + detail::kPrefetchAhead]);
                detail::prefetch_values(table.data() + ahead * dim, dim);
                detail::prefetch_values(m_.data() + ahead * dim, dim);
                detail::prefetch_values(v_.data() + ahead * dim, dim);
            }
            for (Index i = 0; i < dim; ++i) {
                const T gi = gv(i, Index(j));
                T& m = m_(i, r);
                T& v = v_(i, r);
                m += (gi - m) * a1;
                v += (gi * gi - v) * a2;
                table(i, r) -= step_size * (m / (std::sqrt(v) + eps));
            }
        }
    }
    template <class Table>
    void step(Table& table, const RowSparseGrad<T>& g) {
        step(table.table(), g);
    }

    long long steps() const { return steps_; }
    /// The shape of the table this optimizer is for: rows ids of dim.
    Index rows() const { return m_.cols(); }
    Index dim() const { return m_.rows(); }
    const SparseAdamOptions& options() const { return o_; }
    /// Changes the learning rate for the next steps (a schedule); finite and >= 0.
    void set_lr(double lr) {
        detail::require(lr >= 0 && std::isfinite(lr), "moe::SparseAdam::set_lr: lr must be finite and >= 0, got ", lr);
        o_.lr = lr;
    }
    const Matrix<T>& exp_avg() const { return m_; }
    const Matrix<T>& exp_avg_sq() const { return v_; }

    /// The state for model files: f(name, matrix) per tensor under PyTorch's state names.
    static constexpr const char* kind = "sparse_adam";
    template <class F>
    void for_each_state(F&& f) const {
        f("exp_avg", m_);
        f("exp_avg_sq", v_);
    }
    /// Replaces the state (matrices of for_each_state's shapes, in its order), e.g. from a file.
    void set_state(const std::vector<Matrix<T>>& state, long long steps) {
        detail::require(state.size() == 2 && state[0].rows() == m_.rows() && state[0].cols() == m_.cols() &&
                            state[1].rows() == v_.rows() && state[1].cols() == v_.cols() && steps >= 0,
                        "moe::SparseAdam::set_state: the state does not fit this optimizer");
        m_ = state[0];
        v_ = state[1];
        steps_ = steps;
    }

private:
    SparseAdamOptions o_;
    Matrix<T> m_, v_;
    long long steps_ = 0;
};

}  // namespace moe
