// The external headers every test includes, precompiled once per build (MOE_PCH): parsing Eigen,
// nlohmann-json and Catch2 took about 40 s of each test file's compile on the 2-core machines.
// Only headers the project does not change go here, so editing moe's own headers rebuilds no PCH.
#pragma once
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "support/catch.hpp"
