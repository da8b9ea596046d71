#pragma once
// Grow-only workspace matrices. Layers own their outputs and caches as Buffers: the storage grows
// to the largest batch seen and is then reused, so a smaller batch followed by a larger one does not
// allocate again (page faults are expensive; steady-state training allocates nothing).
#include <new>

#include "moe/core/types.hpp"

namespace moe {

/// A rows x cols matrix view over grow-only storage. `resize` keeps capacity; contents are not kept.
template <class T>
class Buffer {
public:
    Buffer() = default;
    Buffer(const Buffer& other) : storage_(other.storage_) { remap(other.view_.rows(), other.view_.cols()); }
    Buffer& operator=(const Buffer& other) {
        if (this != &other) {
            storage_ = other.storage_;
            remap(other.view_.rows(), other.view_.cols());
        }
        return *this;
    }
    Buffer(Buffer&& other) noexcept : Buffer() { swap(other); }
    Buffer& operator=(Buffer&& other) noexcept {
        swap(other);
        return *this;
    }

    /// Shape the buffer as rows x cols, growing the storage if needed. Returns the view.
    MatrixView<T>& resize(Index rows, Index cols) {
        if (rows * cols > storage_.size()) storage_.resize(rows * cols);
        remap(rows, cols);
        return view_;
    }
    /// Shape as rows x cols and fill with zeros.
    MatrixView<T>& zeros(Index rows, Index cols) {
        resize(rows, cols).setZero();
        return view_;
    }
    /// Grow the storage to at least `size` values without reshaping (a later resize within it
    /// allocates nothing).
    void reserve(Index size) {
        if (size > storage_.size()) {
            const Index rows = view_.rows(), cols = view_.cols();
            storage_.resize(size);
            remap(rows, cols);
        }
    }
    MatrixView<T>& view() { return view_; }
    const MatrixView<T>& view() const { return view_; }
    Index rows() const { return view_.rows(); }
    Index cols() const { return view_.cols(); }
    Index capacity() const { return storage_.size(); }

private:
    void remap(Index rows, Index cols) { new (&view_) MatrixView<T>(storage_.data(), rows, cols); }
    void swap(Buffer& other) noexcept {
        storage_.swap(other.storage_);
        const Index r = view_.rows(), c = view_.cols();
        remap(other.view_.rows(), other.view_.cols());
        other.remap(r, c);
    }

    Vector<T> storage_;
    MatrixView<T> view_{nullptr, 0, 0};
};

}  // namespace moe
