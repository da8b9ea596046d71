#pragma once
// The tests use the library's public gradient checker (include/moe/testing/gradcheck.hpp).
#include "moe/moe.hpp"
#include "moe/testing/gradcheck.hpp"
