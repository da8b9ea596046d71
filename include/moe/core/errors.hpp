#pragma once
// The exceptions the library throws. Checks are always on, in every build type: a wrong shape in a
// release build must not silently corrupt memory.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe {

/// A matrix had the wrong shape for the layer, loss or model it was given to.
/// The message names the entry point and both shapes.
struct shape_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

/// A configuration value is out of range (zero sizes, dropout p outside [0, 1), labels outside
/// their range, ...). The message names the setting and the value.
struct config_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

/// A model or data file could not be read or written. The message names the file.
struct io_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Training hit a non-finite loss; the message names the epoch, batch and task.
struct numeric_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Args>
std::string concat(Args&&... args) {
    std::ostringstream os;
    os.precision(17);
    (os << ... << std::forward<Args>(args));
    return os.str();
}

// Shape checks. They build a message only when they fail, so they cost nothing on the hot path.
// Message: "<layer>::<fn>: <what> is R x C (features x batch), expected N rows".
template <class M>
void check_rows(const M& m, long expected_rows, const std::string& layer, const char* fn,
                const char* what = "input") {
    if (static_cast<long>(m.rows()) != expected_rows)
        throw shape_error(concat(layer, "::", fn, ": ", what, " is ", m.rows(), " x ", m.cols(),
                                 " (features x batch), expected ", expected_rows, " rows"));
}

template <class M>
void check_shape(const M& m, long rows, long cols, const std::string& layer, const char* fn,
                 const char* what) {
    if (static_cast<long>(m.rows()) != rows || static_cast<long>(m.cols()) != cols)
        throw shape_error(concat(layer, "::", fn, ": ", what, " is ", m.rows(), " x ", m.cols(),
                                 ", expected ", rows, " x ", cols));
}

/// Config check: throws config_error with the parts concatenated. The message is built only on
/// failure, so a check on the hot path costs a branch and nothing else.
template <class... Parts>
void require(bool ok, Parts&&... parts) {
    if (!ok) throw config_error(concat(std::forward<Parts>(parts)...));
}

}  // namespace detail
}  // namespace moe
