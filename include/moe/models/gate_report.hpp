#pragma once
// Gate inspection: what each task's gate does with the experts over a data set.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "moe/models/mmoe.hpp"

namespace moe {

/// Per gate (one per task; one shared gate for OMoE) over the samples:
/// mean_weight (G x E) the mean gate weight per expert; utilisation (E) the mean over the gates;
/// entropy (G) the mean per-sample entropy of the gate in nats (log E = uniform, 0 = one expert);
/// warnings when a gate has collapsed onto one expert (mean weight >= collapse_threshold) or an
/// expert is (almost) unused by every gate (utilisation < 1% / E).
struct GateReport {
    std::vector<std::string> gates;
    Matrix<double> mean_weight;
    Vector<double> utilisation;
    Vector<double> entropy;
    std::vector<std::string> warnings;

    /// A table: one row per gate, one column per expert, then the entropy.
    std::string table(int precision = 3) const {
        std::ostringstream os;
        os.setf(std::ios::fixed);
        os.precision(precision);
        std::size_t width = 8;
        for (const auto& g : gates) width = std::max(width, g.size() + 2);
        os << std::string(width, ' ');
        for (Index e = 0; e < mean_weight.cols(); ++e) os << "  expert" << e;
        os << "  entropy\n";
        for (Index g = 0; g < mean_weight.rows(); ++g) {
            const std::string& name = gates[static_cast<std::size_t>(g)];
            os << name << std::string(width - name.size(), ' ');
            for (Index e = 0; e < mean_weight.cols(); ++e) {
                std::ostringstream cell;
                cell.setf(std::ios::fixed);
                cell.precision(precision);
                cell << mean_weight(g, e);
                const std::string label = "expert" + std::to_string(e);
                os << "  " << std::string(label.size() > cell.str().size() ? label.size() - cell.str().size() : 0, ' ')
                   << cell.str();
            }
            os << "  " << entropy(g) << "\n";
        }
        return os.str();
    }
};

/// Inspects the gates of an MMoE or OMoE on the samples of x (features x N), in batches.
template <class T>
GateReport inspect_gates(const MMoE<T>& model, const Matrix<T>& x, double collapse_threshold = 0.9,
                         Index batch_size = 4096) {
    detail::require(collapse_threshold > 0 && collapse_threshold <= 1,
                    "moe::inspect_gates: collapse_threshold must be in (0, 1], got ", collapse_threshold);
    detail::require(x.cols() > 0, "moe::inspect_gates: no samples");
    const Index G = model.gates(), E = model.experts();
    GateReport r;
    if (G == 1 && model.tasks().size() > 1) r.gates.push_back("shared");
    else
        for (const auto& t : model.tasks()) r.gates.push_back(t.name);
    r.mean_weight = Matrix<double>::Zero(G, E);
    r.entropy = Vector<double>::Zero(G);
    InferenceScratch<T> ws;
    for (Index begin = 0; begin < x.cols(); begin += batch_size) {
        const Index n = std::min(batch_size, x.cols() - begin);
        const auto& p = model.gate_probabilities(ConstView<T>(x.data() + begin * x.rows(), x.rows(), n), ws);
        for (Index j = 0; j < n; ++j)
            for (Index g = 0; g < G; ++g)
                for (Index e = 0; e < E; ++e) {
                    const double v = double(p(g * E + e, j));
                    r.mean_weight(g, e) += v;
                    if (v > 0) r.entropy(g) -= v * std::log(v);
                }
    }
    r.mean_weight /= double(x.cols());
    r.entropy /= double(x.cols());
    r.utilisation = r.mean_weight.colwise().mean().transpose();
    for (Index g = 0; g < G; ++g) {
        Index top = 0;
        const double w = r.mean_weight.row(g).maxCoeff(&top);
        if (w >= collapse_threshold && E > 1)
            r.warnings.push_back(detail::concat("gate '", r.gates[static_cast<std::size_t>(g)],
                                                "' has collapsed onto expert ", top, " (mean weight ", w, ")"));
    }
    for (Index e = 0; e < E; ++e)
        if (E > 1 && r.utilisation(e) < 0.01 / double(E))
            r.warnings.push_back(detail::concat("expert ", e, " is almost unused (mean weight ", r.utilisation(e), ")"));
    return r;
}

}  // namespace moe
