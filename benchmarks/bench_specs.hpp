#pragma once
// The model configurations more than one benchmark program measures.
#include <moe/moe.hpp>

/// The default config of the MMoE issue: input 64, 8 experts 64 -> 256 -> 128 (ReLU), one linear
/// gate per task, towers 128 -> 64 -> 1, tasks binary, binary, regression.
inline moe::MMoESpec default_mmoe_spec() {
    moe::MMoESpec s;
    s.input = 64;
    s.experts = 8;
    s.expert_hidden = {256};
    s.expert_dim = 128;
    s.tower_hidden = {64};
    s.tasks = {moe::binary_task("click"), moe::binary_task("like"), moe::regression_task("watch")};
    return s;
}
