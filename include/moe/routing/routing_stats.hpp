#pragma once
// What a router did in one forward: the diagnostics users look at to see whether experts balance.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "moe/core/types.hpp"

namespace moe {

/// Routing diagnostics of one forward over N tokens and E experts (all counts over the N k
/// (token, expert) assignments).
struct RoutingStats {
    Index tokens = 0;
    std::vector<Index> routed;  ///< assignments per expert chosen by the router (before capacity)
    std::vector<Index> kept;    ///< assignments per expert that ran (after capacity; expert choice: c each)
    Index dropped = 0;          ///< assignments over capacity, not run
    Index dropped_tokens = 0;   ///< tokens none of whose assignments ran (expert choice: that no expert took)
    Index dead_experts = 0;     ///< experts no token chose
    double entropy = 0;         ///< mean over tokens of the router's entropy, nats (log E when uniform)
    double load_balance = 0;    ///< max over mean of `routed` (1 when perfectly balanced, E when one expert takes all)
    /// Unweighted auxiliary losses of this forward (see routing/aux_losses.hpp); load_loss only with
    /// a noisy router in training.
    double balance_loss = 0, importance_loss = 0, load_loss = 0, z_loss = 0;

    /// A table: one line per expert with its routed and kept counts and share, then the summary.
    std::string table() const {
        std::string s = "expert   routed     kept   share\n";
        char line[96];
        double total = 0;
        for (Index r : routed) total += double(r);
        total = std::max(total, 1.0);
        for (std::size_t e = 0; e < routed.size(); ++e) {
            std::snprintf(line, sizeof line, "%6zu %8ld %8ld %6.1f%%\n", e, long(routed[e]), long(kept[e]),
                          100.0 * double(routed[e]) / total);
            s += line;
        }
        std::snprintf(line, sizeof line, "dropped %ld assignments (%ld tokens), %ld dead experts, load max/mean %.2f, entropy %.3f\n",
                      long(dropped), long(dropped_tokens), long(dead_experts), load_balance, entropy);
        s += line;
        return s;
    }
};

}  // namespace moe
