#pragma once
// moe::mpi (link moe::mpi): the MPI communicator data-parallel training runs on, and the collective
// steps it needs: broadcast and sum of a scalar vector, gathering variable-length vectors, and
// agreement on failure, so that an error on one rank stops every rank with that rank's message
// instead of leaving the others waiting in a collective.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe::mpi {

namespace detail {
template <class T>
MPI_Datatype datatype();
template <>
inline MPI_Datatype datatype<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype datatype<double>() { return MPI_DOUBLE; }
template <>
inline MPI_Datatype datatype<long>() { return MPI_LONG; }
template <>
inline MPI_Datatype datatype<long long>() { return MPI_LONG_LONG; }
template <>
inline MPI_Datatype datatype<int>() { return MPI_INT; }
}  // namespace detail

/// A communicator (MPI_COMM_WORLD unless given) with the collectives of distributed training. MPI
/// must be initialised (MPI_Init) before one is made. Every call is collective: all ranks of the
/// communicator make it, in the same order. An MPI error throws moe::io_error naming the call.
class Communicator {
public:
    explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
        int initialised = 0;
        MPI_Initialized(&initialised);
        ::moe::detail::require(initialised != 0, "moe::mpi::Communicator: MPI is not initialised (call MPI_Init first)");
        check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    }

    int rank() const { return rank_; }
    int size() const { return size_; }
    MPI_Comm get() const { return comm_; }

    /// data[0, n) of rank `root` to every rank (in pieces of 2^30 values: MPI counts are ints, an
    /// embedding table may hold more).
    template <class T>
    void broadcast(T* data, Index n, int root = 0) const {
        for (Index begin = 0; begin < n; begin += kPiece)
            check(MPI_Bcast(data + begin, count(std::min(kPiece, n - begin)), detail::datatype<T>(), root, comm_), "MPI_Bcast");
    }
    /// data[0, n) summed over the ranks, in place on every rank (one MPI_Allreduce on the whole
    /// buffer, or on pieces of 2^30 values).
    template <class T>
    void sum(T* data, Index n) const {
        for (Index begin = 0; begin < n; begin += kPiece)
            check(MPI_Allreduce(MPI_IN_PLACE, data + begin, count(std::min(kPiece, n - begin)), detail::datatype<T>(), MPI_SUM, comm_),
                  "MPI_Allreduce");
    }
    template <class T>
    T sum(T v) const {
        sum(&v, 1);
        return v;
    }
    template <class T>
    T min(T v) const {
        check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, detail::datatype<T>(), MPI_MIN, comm_), "MPI_Allreduce");
        return v;
    }
    /// Every rank's vector, concatenated in rank order, on every rank.
    template <class T>
    std::vector<T> all_gather(const std::vector<T>& mine) const {
        const int n = count(Index(mine.size()));
        const auto ranks = static_cast<std::size_t>(size_);
        std::vector<int> counts(ranks), displs(ranks, 0);
        check(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_), "MPI_Allgather");
        long long total = 0;
        for (int r = 0; r < size_; ++r) displs[std::size_t(r)] = int(total), total += counts[std::size_t(r)];
        ::moe::detail::require(total <= 2147483647LL, "moe::mpi: gathering ", total, " values, more than MPI's int counts hold");
        std::vector<T> all(static_cast<std::size_t>(total));
        check(MPI_Allgatherv(mine.data(), n, detail::datatype<T>(), all.data(), counts.data(), displs.data(), detail::datatype<T>(), comm_),
              "MPI_Allgatherv");
        return all;
    }

    /// Runs f on every rank and agrees on the outcome: when f throws on any rank, every rank
    /// throws the error of the lowest failing rank ("rank r: " + its message, of its type when it
    /// is one of moe's errors or std::invalid_argument / std::runtime_error). Use it around every
    /// step that may fail on some ranks only (a bad shard), before the next collective.
    void agree(const std::function<void()>& f) const {
        int kind = 0;  // 0 ok; 1 config_error; 2 shape_error; 3 io_error; 4 numeric_error; 5 other
        std::string message;
        try {
            f();
        } catch (const shape_error& e) {
            kind = 2, message = e.what();
        } catch (const config_error& e) {
            kind = 1, message = e.what();
        } catch (const io_error& e) {
            kind = 3, message = e.what();
        } catch (const numeric_error& e) {
            kind = 4, message = e.what();
        } catch (const std::exception& e) {
            kind = 5, message = e.what();
        }
        const int failed = min(kind != 0 ? rank_ : size_);
        if (failed == size_) return;
        long long length = rank_ == failed ? static_cast<long long>(message.size()) : 0;
        int k = kind;
        broadcast(&length, 1, failed);
        broadcast(&k, 1, failed);
        message.resize(std::size_t(length));
        if (length > 0) check(MPI_Bcast(&message[0], int(length), MPI_CHAR, failed, comm_), "MPI_Bcast");
        const std::string text = "rank " + std::to_string(failed) + ": " + message;
        switch (k) {
            case 1: throw config_error(text);
            case 2: throw shape_error(text);
            case 3: throw io_error(text);
            case 4: throw numeric_error(text);
            default: throw std::runtime_error(text);
        }
    }

private:
    static constexpr Index kPiece = Index(1) << 30;
    static int count(Index n) {
        ::moe::detail::require(n >= 0 && n <= 2147483647, "moe::mpi: a message of ", n, " values is more than MPI's int counts hold");
        return int(n);
    }
    static void check(int code, const char* what) {
        if (code == MPI_SUCCESS) return;
        char text[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(code, text, &len);
        throw io_error(std::string("moe::mpi: ") + what + " failed: " + std::string(text, std::size_t(len)));
    }

    MPI_Comm comm_;
    int rank_ = 0, size_ = 1;
};

}  // namespace moe::mpi
