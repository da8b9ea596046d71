#pragma once
// Adagrad for embedding tables on the rows a batch touched: torch.optim.Adagrad's sparse update, or
// the row-wise variant large tables use (one accumulator per row, as FBGEMM's and torchrec's
// EXACT_ROWWISE_ADAGRAD).
#include <cmath>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/table_memory.hpp"
#include "moe/core/types.hpp"
#include "moe/layers/row_sparse.hpp"

namespace moe {

/// torch.optim.Adagrad's settings (its defaults), and the row-wise switch.
struct SparseAdagradOptions {
    double lr = 1e-2;
    double lr_decay = 0;
    double eps = 1e-10;
    double initial_accumulator_value = 0;
    /// One accumulator per row, increased by the mean of the row's squared gradient (memory: rows
    /// values instead of rows x dim).
    bool rowwise = false;
};

/// Adagrad on the touched rows of one table (dim x rows). Element-wise (torch.optim.Adagrad with a
/// sparse gradient): s += g^2, w -= lr_t g / (sqrt(s) + eps) with lr_t = lr / (1 + (t - 1) lr_decay).
/// Row-wise: s_r += mean(g_r^2), w_r -= lr_t g_r / (sqrt(s_r) + eps). Accumulators are dim x rows
/// (element-wise) or 1 x rows (row-wise). A step costs O(touched rows x dim).
template <class T>
class SparseAdagrad {
public:
    using Options = SparseAdagradOptions;

    SparseAdagrad(Index rows, Index dim, SparseAdagradOptions o = {}) : o_(o), dim_(dim) {
        detail::require(rows > 0 && dim > 0, "moe::SparseAdagrad: rows and dim must be positive, got ", rows, " x ", dim);
        detail::require(o.lr >= 0 && std::isfinite(o.lr), "moe::SparseAdagrad: lr must be finite and >= 0, got ", o.lr);
        detail::require(o.lr_decay >= 0, "moe::SparseAdagrad: lr_decay must be >= 0, got ", o.lr_decay);
        detail::require(o.eps > 0, "moe::SparseAdagrad: eps must be > 0, got ", o.eps);
        detail::require(o.initial_accumulator_value >= 0, "moe::SparseAdagrad: initial_accumulator_value must be >= 0, got ",
                        o.initial_accumulator_value);
        sum_ = detail::table_matrix<T>(o.rowwise ? 1 : dim, rows, T(o.initial_accumulator_value));
    }
    template <class Table>
    explicit SparseAdagrad(const Table& table, SparseAdagradOptions o = {}) : SparseAdagrad(table.rows(), table.dim(), o) {}

    /// One step of `table` with the row-sparse gradient g. Checks g first: an error changes nothing.
    void step(Matrix<T>& table, const RowSparseGrad<T>& g) {
        detail::check_row_sparse_grad(table, g, sum_.cols(), dim_, "moe::SparseAdagrad::step");
        ++steps_;
        const T lr = T(o_.lr / (1 + double(steps_ - 1) * o_.lr_decay)), eps = T(o_.eps);
        const auto& gv = g.values.view();
        for (std::size_t j = 0; j < g.rows.size(); ++j) {
            const Index r = Index(g.rows[j]), c = Index(j);
            if (j + detail::kPrefetchAhead < g.rows.size()) {  // rows far apart in a big table: ask early
                const Index ahead = Index(g.rows[j + detail::kPrefetchAhead]);
                detail::prefetch_values(table.data() + ahead * dim_, dim_);
                detail::prefetch_values(sum_.data() + ahead * sum_.rows(), sum_.rows());
            }
            if (o_.rowwise) {
                sum_(0, r) += gv.col(c).squaredNorm() / T(dim_);
                const T scale = lr / (std::sqrt(sum_(0, r)) + eps);
                table.col(r) -= scale * gv.col(c);
                continue;
            }
            for (Index i = 0; i < dim_; ++i) {
                const T gi = gv(i, c);
                sum_(i, r) += gi * gi;
                table(i, r) -= lr * (gi / (std::sqrt(sum_(i, r)) + eps));
            }
        }
    }
    template <class Table>
    void step(Table& table, const RowSparseGrad<T>& g) {
        step(table.table(), g);
    }

    long long steps() const { return steps_; }
    /// The shape of the table this optimizer is for: rows ids of dim.
    Index rows() const { return sum_.cols(); }
    Index dim() const { return dim_; }
    const SparseAdagradOptions& options() const { return o_; }
    /// Changes the learning rate for the next steps (a schedule); finite and >= 0.
    void set_lr(double lr) {
        detail::require(lr >= 0 && std::isfinite(lr), "moe::SparseAdagrad::set_lr: lr must be finite and >= 0, got ", lr);
        o_.lr = lr;
    }
    /// The accumulators: dim x rows, or 1 x rows when row-wise.
    const Matrix<T>& state_sum() const { return sum_; }

    /// The state for model files: f(name, matrix) per tensor under PyTorch's state names.
    static constexpr const char* kind = "sparse_adagrad";
    template <class F>
    void for_each_state(F&& f) const {
        f("sum", sum_);
    }
    /// Replaces the state (matrices of for_each_state's shapes, in its order), e.g. from a file.
    void set_state(const std::vector<Matrix<T>>& state, long long steps) {
        detail::require(state.size() == 1 && state[0].rows() == sum_.rows() && state[0].cols() == sum_.cols() && steps >= 0,
                        "moe::SparseAdagrad::set_state: the state does not fit this optimizer");
        sum_ = state[0];
        steps_ = steps;
    }

private:
    SparseAdagradOptions o_;
    Index dim_;
    Matrix<T> sum_;
    long long steps_ = 0;
};

}  // namespace moe
