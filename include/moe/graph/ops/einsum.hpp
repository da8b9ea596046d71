#pragma once
// torch.einsum(equation, a, b) with two operands and an explicit output ("be,bed->bd"): one letter
// per dimension, a letter's dimensions equal wherever it appears (B only with B), output letters
// from the inputs, each once. No "..." (write the dimensions out).
#include <map>
#include <numeric>

#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Einsum {
    static constexpr const char* type = "torch.einsum";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"equation"});
        c.expect_inputs(2, 2);
        std::string eq;
        for (char ch : c.string_param("equation"))
            if (ch != ' ') eq += ch;
        const auto arrow = eq.find("->"), comma = eq.find(',');
        if (arrow == std::string::npos || comma == std::string::npos || comma > arrow ||
            eq.find(',', comma + 1) < arrow)
            throw c.error("equation '" + eq + "' must have two operands and an explicit output, as 'be,bed->bd'");
        if (eq.find('.') != std::string::npos)
            throw c.error("equation '" + eq + "': '...' is not supported, write the dimensions out");
        const std::string terms[2] = {eq.substr(0, comma), eq.substr(comma + 1, arrow - comma - 1)};
        const std::string out_term = eq.substr(arrow + 2);
        std::map<char, Index> size;
        for (int t = 0; t < 2; ++t) {
            const Shape& s = c.input(std::size_t(t));
            if (Index(terms[t].size()) != s.rank())
                throw c.error(moe::detail::concat("operand ", t, " is '", terms[t], "' (", terms[t].size(),
                                                  " dimensions) but its input is ", to_string(s)));
            for (std::size_t i = 0; i < terms[t].size(); ++i) {
                const char l = terms[t][i];
                if (!std::isalpha(static_cast<unsigned char>(l)))
                    throw c.error(std::string("equation '") + eq + "': '" + l + "' is not a letter");
                if (terms[t].find(l) != i)
                    throw c.error(std::string("equation '") + eq + "': letter '" + l + "' appears twice in operand " +
                                  std::to_string(t) + " (diagonals are not supported)");
                auto it = size.find(l);
                if (it == size.end())
                    size[l] = s[Index(i)];
                else if (it->second != s[Index(i)])
                    throw c.error(moe::detail::concat("letter '", l, "' is ", dim_string(it->second),
                                                      " in one place and ", dim_string(s[Index(i)]), " in operand ", t,
                                                      " ", to_string(s)));
            }
        }
        OpShape r;
        for (char l : out_term) {
            if (!size.count(l))
                throw c.error(std::string("output letter '") + l + "' is in no operand of '" + eq + "'");
            if (std::count(out_term.begin(), out_term.end(), l) > 1)
                throw c.error(std::string("output letter '") + l + "' appears twice");
            r.out.dims.push_back(size[l]);
        }
        double products = 1;  // one multiply-add per combination of all letters
        for (const auto& [l, n] : size) products *= n == kBatch ? 1.0 : double(n);
        r.flops_per_sample = 2.0 * products;
        return r;
    }

    /// The letters sorted into batch (both operands and the output), left (first operand and the
    /// output), contracted (both operands only), right (second operand and the output) and summed
    /// (one operand only). Each operand is permuted to [batch, left|right, contracted] order (its
    /// summed letters innermost, then summed out), multiplied as a batched product
    /// [batch, left, contracted] x [batch, contracted, right], and the result permuted to the output's
    /// order. Permutations that are the identity are skipped ('be,bed->bd' copies nothing).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(const std::string& equation) {
            std::string eq;
            for (char ch : equation)
                if (ch != ' ') eq += ch;
            const auto comma = eq.find(','), arrow = eq.find("->");
            a_ = eq.substr(0, comma);
            b_ = eq.substr(comma + 1, arrow - comma - 1);
            out_ = eq.substr(arrow + 2);
            auto in = [](const std::string& s, char l) { return s.find(l) != std::string::npos; };
            std::string batch, left, right, contracted, sum_a, sum_b;
            for (char l : a_) {
                if (in(b_, l) && in(out_, l))
                    batch += l;
                else if (in(out_, l))
                    left += l;
                else if (in(b_, l))
                    contracted += l;
                else
                    sum_a += l;
            }
            for (char l : b_)
                if (!in(a_, l)) (in(out_, l) ? right : sum_b) += l;
            order_a_ = batch + left + contracted + sum_a;
            order_b_ = batch + contracted + right + sum_b;
            product_ = batch + left + right;
            groups_ = {batch, left, contracted, right, sum_a, sum_b};
        }
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            thread_local std::vector<T> a, b, c, ta, tb;
            thread_local std::vector<Index> ao, bo;
            run_forward(in, out, d, a, b, c, ta, tb, ao, bo);
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims& d) override {
            run_forward(in, out, d, a_buf_, b_buf_, c_buf_, ta_, tb_, ao_, bo_);
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims& d,
                      const std::vector<T*>& din) override {
            const Sizes z = sizes(*in[0].dims, *in[1].dims);
            const BatchedProduct p = product(z);
            // dC in the product's order.
            const T* dc = dout;
            if (!identity(out_, product_)) {
                c_buf_.resize(std::size_t(numel(d)));
                permute(dout, d, perm(out_, product_), c_buf_.data(), false);
                dc = c_buf_.data();
            }
            const T* a = operand(in[0], a_, order_a_, z.sa, a_buf_, ta_);
            const T* b = operand(in[1], b_, order_b_, z.sb, b_buf_, tb_);
            // An operand in the product's order already (nothing permuted or summed) takes its
            // gradient directly; the others through a buffer, scattered back.
            const bool direct_a = identity(a_, order_a_) && z.sa == 1, direct_b = identity(b_, order_b_) && z.sb == 1;
            if (din[0] && !direct_a) da_.resize(std::size_t(z.nb * z.n * z.k));
            if (din[1] && !direct_b) db_.resize(std::size_t(z.nb * z.k * z.m));
            T* da = !din[0] ? nullptr : direct_a ? din[0] : da_.data();
            T* db = !din[1] ? nullptr : direct_b ? din[1] : db_.data();
            p.backward(a, b, dc, da, db, ao_, bo_, !direct_a || this->fresh[0], !direct_b || this->fresh[1]);
            if (din[0] && !direct_a) scatter(da_, z.sa, *in[0].dims, a_, order_a_, din[0], this->fresh[0], ta_);
            if (din[1] && !direct_b) scatter(db_, z.sb, *in[1].dims, b_, order_b_, din[1], this->fresh[1], tb_);
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        struct Sizes {
            Index nb = 1, n = 1, k = 1, m = 1, sa = 1, sb = 1;
        };
        Index size_of(char l, const Dims& da, const Dims& db) const {
            const auto i = a_.find(l);
            return i != std::string::npos ? da[i] : db[b_.find(l)];
        }
        Sizes sizes(const Dims& da, const Dims& db) const {
            Sizes z;
            Index* target[6] = {&z.nb, &z.n, &z.k, &z.m, &z.sa, &z.sb};
            for (std::size_t g = 0; g < 6; ++g)
                for (char l : groups_[g]) *target[g] *= size_of(l, da, db);
            return z;
        }
        static BatchedProduct product(const Sizes& z) {
            BatchedProduct p;
            p.batch = {z.nb};
            p.a_stride = p.b_stride = {1};
            p.n = z.n;
            p.k = z.k;
            p.m = z.m;
            return p;
        }
        static bool identity(const std::string& from, const std::string& to) { return from == to; }
        /// perm[i] = position in `from` of the letter to[i].
        static Dims perm(const std::string& from, const std::string& to) {
            Dims p;
            for (char l : to) p.push_back(Index(from.find(l)));
            return p;
        }
        /// The operand in `order`, its summed letters (innermost, `s` elements) summed out.
        const T* operand(const In<T>& x, const std::string& letters, const std::string& order, Index s,
                         std::vector<T>& buf, std::vector<T>& tmp) const {
            const T* p = x.data;
            if (!identity(letters, order)) {
                tmp.resize(std::size_t(x.size()));
                permute(x.data, *x.dims, perm(letters, order), tmp.data(), false);
                p = tmp.data();
            }
            if (s == 1) return p;
            const Index rows = x.size() / s;
            buf.assign(std::size_t(rows), T(0));
            for (Index r = 0; r < rows; ++r)
                for (Index j = 0; j < s; ++j) buf[std::size_t(r)] += p[r * s + j];
            return buf.data();
        }
        /// Writes (fresh) or adds the gradient g of the reduced, permuted operand to its input's layout.
        void scatter(const std::vector<T>& g, Index s, const Dims& dims, const std::string& letters,
                     const std::string& order, T* dx, bool overwrite, std::vector<T>& tmp) const {
            const Index rows = Index(g.size());
            tmp.resize(std::size_t(rows * s));
            for (Index r = 0; r < rows; ++r)
                for (Index j = 0; j < s; ++j) tmp[std::size_t(r * s + j)] = g[std::size_t(r)];
            Dims od;
            for (char l : order) od.push_back(dims[letters.find(l)]);
            permute(tmp.data(), od, perm(order, letters), dx, !overwrite);
        }
        void run_forward(const std::vector<In<T>>& in, T* out, const Dims& d, std::vector<T>& a_buf,
                         std::vector<T>& b_buf, std::vector<T>& c_buf, std::vector<T>& ta, std::vector<T>& tb,
                         std::vector<Index>& ao, std::vector<Index>& bo) const {
            const Sizes z = sizes(*in[0].dims, *in[1].dims);
            const T* a = operand(in[0], a_, order_a_, z.sa, a_buf, ta);
            const T* b = operand(in[1], b_, order_b_, z.sb, b_buf, tb);
            if (identity(product_, out_)) {
                product(z).forward(a, b, out, ao, bo);
                return;
            }
            c_buf.resize(std::size_t(numel(d)));
            product(z).forward(a, b, c_buf.data(), ao, bo);
            Dims pd;
            for (char l : product_) pd.push_back(size_of(l, *in[0].dims, *in[1].dims));
            permute(c_buf.data(), pd, perm(product_, out_), out, false);
        }
        std::string a_, b_, out_, order_a_, order_b_, product_;
        std::array<std::string, 6> groups_;
        std::vector<T> a_buf_, b_buf_, c_buf_, ta_, tb_, da_, db_;
        std::vector<Index> ao_, bo_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.string_param("equation"));
    }
};

}  // namespace moe::graph::ops
