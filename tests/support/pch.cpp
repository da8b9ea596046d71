// Compiles tests/support/pch.hpp into the precompiled header the tests reuse.
