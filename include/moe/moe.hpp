#pragma once
// The one umbrella include of the moe library.
#include "moe/version.hpp"

#include "moe/core/buffer.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/model.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"

#include "moe/layers/activations.hpp"
#include "moe/layers/batchnorm.hpp"
#include "moe/layers/dropout.hpp"
#include "moe/layers/grouped_linear.hpp"
#include "moe/layers/linear.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/layers/softmax.hpp"

#include "moe/models/expert.hpp"
#include "moe/models/gate.hpp"
#include "moe/models/gate_report.hpp"
#include "moe/models/gated_mixture.hpp"
#include "moe/models/extraction_level.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/ple.hpp"
#include "moe/models/shared_bottom.hpp"
#include "moe/models/sparse_mmoe.hpp"
#include "moe/models/sparse_moe.hpp"
#include "moe/models/task.hpp"
#include "moe/models/tower.hpp"
#include "moe/models/towers.hpp"

#include "moe/routing/aux_losses.hpp"
#include "moe/routing/routing_stats.hpp"

#include "moe/tasks/losses.hpp"
#include "moe/tasks/metrics.hpp"
#include "moe/tasks/multitask_loss.hpp"

#include "moe/train/dataset.hpp"
#include "moe/train/evaluate.hpp"
#include "moe/train/fit.hpp"

#include "moe/serve/rank.hpp"

#include "moe/optim/adam.hpp"
#include "moe/optim/clip.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/optim/sgd.hpp"
#include "moe/io/model_file.hpp"
#include "moe/io/safetensors.hpp"
