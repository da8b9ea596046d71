#pragma once
// torch.einsum(equation, a, b) with two operands and an explicit output ("be,bed->bd"): one letter
// per dimension, a letter's dimensions equal wherever it appears (B only with B), output letters
// from the inputs, each once. No "..." (write the dimensions out).
#include <map>

#include "moe/graph/op_context.hpp"

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
        if (arrow == std::string::npos || comma == std::string::npos || comma > arrow || eq.find(',', comma + 1) < arrow)
            throw c.error("equation '" + eq + "' must have two operands and an explicit output, as 'be,bed->bd'");
        if (eq.find('.') != std::string::npos) throw c.error("equation '" + eq + "': '...' is not supported, write the dimensions out");
        const std::string terms[2] = {eq.substr(0, comma), eq.substr(comma + 1, arrow - comma - 1)};
        const std::string out_term = eq.substr(arrow + 2);
        std::map<char, Index> size;
        for (int t = 0; t < 2; ++t) {
            const Shape& s = c.input(std::size_t(t));
            if (Index(terms[t].size()) != s.rank())
                throw c.error(moe::detail::concat("operand ", t, " is '", terms[t], "' (", terms[t].size(), " dimensions) but its input is ",
                                                  to_string(s)));
            for (std::size_t i = 0; i < terms[t].size(); ++i) {
                const char l = terms[t][i];
                if (!std::isalpha(static_cast<unsigned char>(l))) throw c.error(std::string("equation '") + eq + "': '" + l + "' is not a letter");
                auto it = size.find(l);
                if (it == size.end()) size[l] = s[Index(i)];
                else if (it->second != s[Index(i)])
                    throw c.error(moe::detail::concat("letter '", l, "' is ", dim_string(it->second), " in one place and ",
                                                      dim_string(s[Index(i)]), " in operand ", t, " ", to_string(s)));
            }
        }
        OpShape r;
        for (char l : out_term) {
            if (!size.count(l)) throw c.error(std::string("output letter '") + l + "' is in no operand of '" + eq + "'");
            if (std::count(out_term.begin(), out_term.end(), l) > 1) throw c.error(std::string("output letter '") + l + "' appears twice");
            r.out.dims.push_back(size[l]);
        }
        double products = 1;  // one multiply-add per combination of all letters
        for (const auto& [l, n] : size) products *= n == kBatch ? 1.0 : double(n);
        r.flops_per_sample = 2.0 * products;
        return r;
    }
};

}  // namespace moe::graph::ops
