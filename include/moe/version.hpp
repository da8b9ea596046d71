#pragma once
// The library version. CMakeLists.txt reads these three lines: this file is the one source of truth.
#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0

#define MOE_VERSION_STRING_(a, b, c) #a "." #b "." #c
#define MOE_VERSION_STRING_X(a, b, c) MOE_VERSION_STRING_(a, b, c)
/// "major.minor.patch"
#define MOE_VERSION_STRING MOE_VERSION_STRING_X(MOE_VERSION_MAJOR, MOE_VERSION_MINOR, MOE_VERSION_PATCH)
