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

#include "moe/tasks/losses.hpp"

#include "moe/optim/adam.hpp"
#include "moe/optim/clip.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/optim/sgd.hpp"
#include "moe/io/safetensors.hpp"
