// shoal.hpp - the Shoal guest ABI v1 for C++17, header-only.
//
// Wraps every import of shoal_v1 (declared in ../include/shoal.h; the
// contract is sdk/ABI.md) in C++ idioms: std::string_view for text and
// bytes, std::chrono timeouts, strong types for pids and references, and a
// small shoal::Result<T> instead of exceptions (build with -fno-exceptions).
//
// Build a guest with:
//
//   clang++ --target=wasm32-wasi --sysroot=/usr -std=c++17 -fno-exceptions -Oz \
//       -nostdinc++ -isystem /usr/include/wasm32-wasi/c++/v1 -L/usr/lib/wasm32-wasi \
//       -I<repo>/sdk/cpp -o guest.wasm guest.cpp
//
// Example, an echo server:
//
//   #include "shoal.hpp"
//   int main() {
//       for (;;) {
//           auto msg = shoal::recv();
//           if (!msg) return 1;
//           if (msg->data == "stop") shoal::exit(0);
//           shoal::send_blocking(msg->sender, msg->data);
//       }
//   }
//
// Bytes are std::string_view (in) and std::string (owned, out): both hold
// arbitrary bytes, NULs included. Functions ending in _into work on a buffer
// the caller owns and allocate nothing.
//
// Blocking calls (capture points: the process may be snapshotted or moved
// while inside them and resumes there): sleep, yield_now, recv*, call*,
// recv_any, recv_from, receive_response, Lock::acquire, and the retries of
// send_blocking and reply.
#ifndef SHOAL_HPP
#define SHOAL_HPP

#include "../include/shoal.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal {

// ---- Errors and Result -------------------------------------------------------

/// One value per ABI error code (see sdk/ABI.md, "Error codes").
enum class Errc : int32_t {
    Fault = SHOAL_EFAULT,
    Invalid = SHOAL_EINVALID,
    NoProcess = SHOAL_ENO_PROCESS,
    Timeout = SHOAL_ETIMEOUT,
    BufferTooSmall = SHOAL_EBUFFER_TOO_SMALL,
    TooLarge = SHOAL_ETOO_LARGE,
    MailboxFull = SHOAL_EMAILBOX_FULL,
    NoModule = SHOAL_ENO_MODULE,
    SpawnFailed = SHOAL_ESPAWN_FAILED,
    Limit = SHOAL_ELIMIT,
    NoNode = SHOAL_ENO_NODE,
    CalleeDown = SHOAL_ECALLEE_DOWN,
    NodeDown = SHOAL_ENODE_DOWN,
    NameTaken = SHOAL_ENAME_TAKEN,
    NotCallable = SHOAL_ENOT_CALLABLE,
    NotFound = SHOAL_ENOT_FOUND,
    VersionMismatch = SHOAL_EVERSION_MISMATCH,
    Fenced = SHOAL_EFENCED,
    BadKey = SHOAL_EBAD_KEY,
    ValueTooLarge = SHOAL_EVALUE_TOO_LARGE,
    BadBucket = SHOAL_EBAD_BUCKET,
    Quota = SHOAL_EQUOTA,
    RateLimited = SHOAL_ERATE_LIMITED,
    NotACounter = SHOAL_ENOT_A_COUNTER,
    Overflow = SHOAL_EOVERFLOW,
    Busy = SHOAL_EBUSY,
    Deadlock = SHOAL_EDEADLOCK,
    LockLost = SHOAL_ELOCK_LOST,
    Unavailable = SHOAL_EUNAVAILABLE,
    BadBatch = SHOAL_EBAD_BATCH,
};

/// The ABI name of a code ("NO_PROCESS"); "UNKNOWN" for a code this header
/// does not know (a newer host's), "OK" for 0.
inline const char *code_name(int32_t code) {
    static const char *const names[] = {
        "FAULT",        "INVALID",         "NO_PROCESS",   "TIMEOUT",      "BUFFER_TOO_SMALL",
        "TOO_LARGE",    "MAILBOX_FULL",    "NO_MODULE",    "SPAWN_FAILED", "LIMIT",
        "NO_NODE",      "CALLEE_DOWN",     "NODE_DOWN",    "NAME_TAKEN",   "NOT_CALLABLE",
        "NOT_FOUND",    "VERSION_MISMATCH", "FENCED",      "BAD_KEY",      "VALUE_TOO_LARGE",
        "BAD_BUCKET",   "QUOTA",           "RATE_LIMITED", "NOT_A_COUNTER", "OVERFLOW",
        "BUSY",         "DEADLOCK",        "LOCK_LOST",    "UNAVAILABLE",  "BAD_BATCH",
    };
    if (code == 0) return "OK";
    if (code < 0 && -code <= int32_t(sizeof names / sizeof names[0])) return names[-code - 1];
    return "UNKNOWN";
}

inline const char *to_string(Errc e) { return code_name(static_cast<int32_t>(e)); }

/// A value or an error code. Test with `if (r)` / `r.ok()`; read the value
/// with `*r`, `r->`, `r.value()`; the error with `r.error()`. Reading the
/// value of an error (or the error of a value) aborts.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}
    Result(Errc error) : error_(error) {}

    bool ok() const { return value_.has_value(); }
    explicit operator bool() const { return ok(); }

    T &value() & { must(ok()); return *value_; }
    const T &value() const & { must(ok()); return *value_; }
    T &&value() && { must(ok()); return std::move(*value_); }
    T &operator*() & { return value(); }
    const T &operator*() const & { return value(); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }
    template <class U>
    T value_or(U &&fallback) const { return ok() ? *value_ : static_cast<T>(std::forward<U>(fallback)); }

    Errc error() const { must(!ok()); return error_; }
    /// The raw ABI code: 0 for a value.
    int32_t code() const { return ok() ? 0 : static_cast<int32_t>(error_); }
    /// True if this is the error `e`.
    bool is(Errc e) const { return !ok() && error_ == e; }

private:
    static void must(bool cond) { if (!cond) __builtin_trap(); }
    std::optional<T> value_;
    Errc error_ = Errc::Invalid;
};

/// Success or an error code.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Errc error) : ok_(false), error_(error) {}

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    Errc error() const { if (ok_) __builtin_trap(); return error_; }
    int32_t code() const { return ok_ ? 0 : static_cast<int32_t>(error_); }
    bool is(Errc e) const { return !ok_ && error_ == e; }

private:
    bool ok_ = true;
    Errc error_ = Errc::Invalid;
};

namespace detail {

/// A raw result as its non-negative value or its error.
inline Result<uint32_t> check(int32_t rc) {
    if (rc < 0) return static_cast<Errc>(rc);
    return static_cast<uint32_t>(rc);
}

inline Result<void> check_void(int32_t rc) {
    if (rc < 0) return static_cast<Errc>(rc);
    return {};
}

/// Lengths the ABI can describe (i32).
inline bool fits(size_t n) { return n <= size_t(std::numeric_limits<int32_t>::max()); }
inline int32_t len32(size_t n) { return fits(n) ? int32_t(n) : std::numeric_limits<int32_t>::max(); }

}  // namespace detail

// ---- Constants and types ------------------------------------------------------

/// Largest message, in bytes (1 MiB).
inline constexpr size_t max_message_size = SHOAL_MAX_MESSAGE_SIZE;
/// Buffer the owning receives start with; they grow to a larger message.
inline constexpr size_t recv_buffer_size = 64 * 1024;
/// Reply buffer of call(): a longer reply is BufferTooSmall (and lost).
inline constexpr size_t call_reply_buffer_size = 64 * 1024;

/// A timeout: std::nullopt (`forever`) waits without limit, 0 only polls.
using Timeout = std::optional<std::chrono::milliseconds>;
inline constexpr std::nullopt_t forever = std::nullopt;

namespace detail {
inline int64_t timeout_ms(Timeout t) {
    if (!t) return -1;
    auto ms = t->count();
    return ms < 0 ? 0 : int64_t(ms);
}
}  // namespace detail

/// A process id: opaque, non-zero, unique in the cluster.
struct Pid {
    uint64_t value = 0;
    constexpr uint64_t raw() const { return value; }
    friend constexpr bool operator==(Pid a, Pid b) { return a.value == b.value; }
    friend constexpr bool operator!=(Pid a, Pid b) { return a.value != b.value; }
};

/// Answers a call (reply()).
struct CallHandle { uint64_t value = 0; };
/// A pending request (send_request()).
struct RequestRef {
    uint64_t value = 0;
    friend bool operator==(RequestRef a, RequestRef b) { return a.value == b.value; }
};
/// A monitor (monitor()).
struct MonitorRef {
    uint64_t value = 0;
    friend bool operator==(MonitorRef a, MonitorRef b) { return a.value == b.value; }
    friend bool operator!=(MonitorRef a, MonitorRef b) { return a.value != b.value; }
};

// ---- Processes -----------------------------------------------------------------

/// This process's pid. Never fails.
inline Pid self_pid() { return Pid{shoal_self_pid()}; }

namespace detail {
template <class Args>
inline Result<std::string> pack_args(const Args &args) {
    std::string packed;
    for (std::string_view a : args) {
        if (a.find('\0') != std::string_view::npos) return Errc::Invalid;
        packed.append(a.data(), a.size());
        packed.push_back('\0');
    }
    return packed;
}
}  // namespace detail

/// spawn() with arguments already packed (NUL-terminated, back to back).
inline Result<Pid> spawn_packed(std::string_view module, std::string_view packed_args) {
    if (!detail::fits(module.size()) || !detail::fits(packed_args.size())) return Errc::Invalid;
    shoal_pid_t pid = 0;
    auto rc = detail::check(shoal_spawn(module.data(), int32_t(module.size()), packed_args.data(),
                                        int32_t(packed_args.size()), &pid));
    if (!rc) return rc.error();
    return Pid{pid};
}

/// Starts `module` ("sha256:<hex>" or a registered name) on this node with
/// `args` as argv[1..]; returns its pid without waiting for it to run.
/// Errors: Invalid (an argument with NUL), NoModule, SpawnFailed, Limit.
template <class Args>
inline Result<Pid> spawn(std::string_view module, const Args &args) {
    auto packed = detail::pack_args(args);
    if (!packed) return packed.error();
    return spawn_packed(module, *packed);
}
inline Result<Pid> spawn(std::string_view module, std::initializer_list<std::string_view> args = {}) {
    return spawn<std::initializer_list<std::string_view>>(module, args);
}

/// spawn_on() with arguments already packed.
inline Result<Pid> spawn_on_packed(std::string_view target, std::string_view module, std::string_view packed_args) {
    if (!detail::fits(target.size()) || !detail::fits(module.size()) || !detail::fits(packed_args.size()))
        return Errc::Invalid;
    shoal_pid_t pid = 0;
    auto rc = detail::check(shoal_spawn_on(target.data(), int32_t(target.size()), module.data(),
                                           int32_t(module.size()), packed_args.data(),
                                           int32_t(packed_args.size()), &pid));
    if (!rc) return rc.error();
    return Pid{pid};
}

/// spawn() with a placement target: "" (the scheduler picks), a node name,
/// or labels "k=v[,k=v]". NoNode when nothing fits.
template <class Args>
inline Result<Pid> spawn_on(std::string_view target, std::string_view module, const Args &args) {
    auto packed = detail::pack_args(args);
    if (!packed) return packed.error();
    return spawn_on_packed(target, module, *packed);
}
inline Result<Pid> spawn_on(std::string_view target, std::string_view module,
                            std::initializer_list<std::string_view> args = {}) {
    return spawn_on<std::initializer_list<std::string_view>>(target, module, args);
}

/// Blocks for at least `duration` (whole ms, rounded up). A capture point.
template <class Rep, class Period>
inline Result<void> sleep(std::chrono::duration<Rep, Period> duration) {
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration).count();
    return detail::check_void(shoal_sleep_ms(ms < 0 ? 0 : int64_t(ms)));
}

/// Lets other processes run. A capture point.
inline Result<void> yield_now() { return detail::check_void(shoal_yield_now()); }

/// Reserved for the host, which inserts calls to it into preemptible
/// modules' loops. Harmless to call; guests have no reason to.
inline void preempt() { shoal_preempt(); }

/// Flushes C stdio, then ends the process with `code`. Queued messages are
/// dropped; destructors do not run.
[[noreturn]] inline void exit(int32_t code) {
    std::fflush(nullptr);
    shoal_exit(code);
}

/// Log levels (the ABI's numbers).
enum class Level : int32_t {
    Error = SHOAL_LOG_ERROR,
    Warn = SHOAL_LOG_WARN,
    Info = SHOAL_LOG_INFO,
    Debug = SHOAL_LOG_DEBUG,
    Trace = SHOAL_LOG_TRACE,
};

/// Appends UTF-8 `message` to the process log kept by the node (not stdout).
inline Result<void> log(Level level, std::string_view message) {
    if (!detail::fits(message.size())) return Errc::Invalid;
    return detail::check_void(shoal_log(int32_t(level), message.data(), int32_t(message.size())));
}

// ---- Messages --------------------------------------------------------------------

/// A received message that owns its bytes.
struct Message {
    Pid sender;
    std::string data;
};

/// Queues a copy of `data` in `to`'s mailbox; never blocks.
inline Result<void> send(Pid to, std::string_view data) {
    if (!detail::fits(data.size())) return Errc::TooLarge;
    return detail::check_void(shoal_send(to.value, data.data(), int32_t(data.size())));
}

/// Retries of send_blocking() before it gives up with MailboxFull; the first
/// `send_blocking_yields` only yield, then sleeps double from 1 ms to 10 ms.
inline constexpr uint32_t send_blocking_max_retries = 1000;
inline constexpr uint32_t send_blocking_yields = 16;

/// send(), retrying while the receiver's mailbox is full (as the Rust SDK).
inline Result<void> send_blocking(Pid to, std::string_view data) {
    int64_t backoff = 1;
    for (uint32_t retries = 0;; retries++) {
        auto r = send(to, data);
        if (!r.is(Errc::MailboxFull) || retries >= send_blocking_max_retries) return r;
        if (retries < send_blocking_yields) {
            if (auto y = yield_now(); !y) return y;
        } else {
            if (auto s = sleep(std::chrono::milliseconds(backoff)); !s) return s;
            backoff = backoff * 2 > 10 ? 10 : backoff * 2;
        }
    }
}

/// The info record of recv_into (sender, length; on BufferTooSmall, length
/// is the size needed).
using RecvInfo = shoal_recv_info_t;

/// Takes the oldest message into `buf` (capture point), waiting at most
/// `timeout`; returns its length. BufferTooSmall leaves it queued, with the
/// size needed in `info.length`.
inline Result<size_t> recv_into(void *buf, size_t buf_len, Timeout timeout, RecvInfo &info) {
    info = RecvInfo{};
    auto rc = detail::check(shoal_recv(buf, detail::len32(buf_len), detail::timeout_ms(timeout), &info));
    if (!rc) return rc.error();
    if (*rc > buf_len) return Errc::Invalid;  // a host bug; never hand out unwritten bytes
    return size_t(*rc);
}

/// Takes the oldest message, of any size, waiting at most `timeout`
/// (forever by default). A capture point.
inline Result<Message> recv(Timeout timeout = forever) {
    static std::string buf;
    if (buf.size() < recv_buffer_size) buf.resize(recv_buffer_size);
    for (;;) {
        RecvInfo info;
        auto n = recv_into(buf.data(), buf.size(), timeout, info);
        if (n) return Message{Pid{info.sender_pid}, std::string(buf.data(), *n)};
        if (n.is(Errc::BufferTooSmall) && info.length > buf.size()) {
            buf.resize(info.length);
            continue;
        }
        return n.error();
    }
}

// ---- Calls, monitors, selective receive -------------------------------------------

/// Why a process went down (SHOAL_REASON_*); a newer host may add reasons.
enum class DownReason : int32_t {
    Exit = SHOAL_REASON_EXIT,
    Trap = SHOAL_REASON_TRAP,
    Killed = SHOAL_REASON_KILLED,
    NoProc = SHOAL_REASON_NOPROC,
    NodeDown = SHOAL_REASON_NODE_DOWN,
    Overloaded = SHOAL_REASON_OVERLOADED,
    NotCallable = SHOAL_REASON_NOT_CALLABLE,
};

/// Why a call failed with CalleeDown / NodeDown / NotCallable.
struct Down {
    DownReason reason{};
    int32_t code = 0;     ///< the exit code for DownReason::Exit
    std::string message;  ///< the trap message for DownReason::Trap
};

/// What recv_any() / recv_from() return.
struct Incoming {
    enum class Kind : uint32_t {
        Message = SHOAL_KIND_MESSAGE,
        Call = SHOAL_KIND_CALL,
        Down = SHOAL_KIND_DOWN,
        Reply = SHOAL_KIND_REPLY,
    };
    Kind kind{};
    Pid from;            ///< the sender; for a DOWN, the process that went down
    uint64_t reference;  ///< call: reply handle; DOWN: monitor reference; reply: request reference
    DownReason reason{}; ///< DOWN only
    int32_t code = 0;    ///< DOWN with DownReason::Exit: the exit code
    std::string data;    ///< the payload (the trap message for a DOWN with DownReason::Trap)

    bool is_message() const { return kind == Kind::Message; }
    bool is_call() const { return kind == Kind::Call; }
    bool is_down() const { return kind == Kind::Down; }
    CallHandle handle() const { return CallHandle{reference}; }
    MonitorRef monitor() const { return MonitorRef{reference}; }
};

using RecvAnyInfo = shoal_recv_any_info_t;
using DownInfo = shoal_down_info_t;

/// call() into a buffer the caller owns; returns the reply's length. On
/// CalleeDown/NodeDown/NotCallable, `down` (if given) gets reason and code.
inline Result<size_t> call_into(Pid to, std::string_view request, void *reply, size_t reply_len,
                                Timeout timeout, DownInfo *down = nullptr) {
    if (!detail::fits(request.size())) return Errc::TooLarge;
    auto rc = detail::check(shoal_call(to.value, request.data(), int32_t(request.size()), reply,
                                       detail::len32(reply_len), detail::timeout_ms(timeout), down));
    if (!rc) return rc.error();
    if (*rc > reply_len) return Errc::Invalid;
    return size_t(*rc);
}

/// Calls `to` with `request` and waits at most `timeout` for its reply (at
/// most call_reply_buffer_size bytes). A capture point; other mail stays
/// queued. On CalleeDown/NodeDown/NotCallable, `down` (if given) says why.
inline Result<std::string> call(Pid to, std::string_view request,
                                Timeout timeout = std::chrono::seconds(5), Down *down = nullptr) {
    static std::string buf;
    if (buf.size() < call_reply_buffer_size) buf.resize(call_reply_buffer_size);
    DownInfo info{};
    auto n = call_into(to, request, buf.data(), buf.size(), timeout, &info);
    if (n) return std::string(buf.data(), *n);
    if (down != nullptr && (n.is(Errc::CalleeDown) || n.is(Errc::NodeDown) || n.is(Errc::NotCallable))) {
        down->reason = DownReason(info.reason);
        down->code = info.code;
        down->message.clear();
        if (info.reason == SHOAL_REASON_TRAP && info.code > 0)
            down->message.assign(buf.data(), std::min(size_t(info.code), buf.size()));
    }
    return n.error();
}

namespace detail {
inline Result<Incoming> receive(bool match, int32_t filter, uint64_t value, Timeout timeout) {
    static std::string buf;
    if (buf.size() < recv_buffer_size) buf.resize(recv_buffer_size);
    for (;;) {
        RecvAnyInfo info{};
        int32_t rc = match ? shoal_recv_match(filter, int64_t(value), buf.data(), len32(buf.size()),
                                              timeout_ms(timeout), &info)
                           : shoal_recv_any(buf.data(), len32(buf.size()), timeout_ms(timeout), &info);
        auto n = check(rc);
        if (n) {
            if (*n > buf.size()) return Errc::Invalid;
            Incoming in;
            in.kind = Incoming::Kind(info.kind > SHOAL_KIND_REPLY ? SHOAL_KIND_MESSAGE : info.kind);
            in.from = Pid{info.sender_pid};
            in.reference = info.reference;
            in.reason = DownReason(info.reason);
            in.code = info.code;
            in.data.assign(buf.data(), *n);
            return in;
        }
        if (n.is(Errc::BufferTooSmall) && info.length > buf.size()) {
            buf.resize(info.length);
            continue;
        }
        return n.error();
    }
}
}  // namespace detail

/// recv() that also receives call requests and DOWN notices. A capture point.
inline Result<Incoming> recv_any(Timeout timeout = forever) {
    return detail::receive(false, 0, 0, timeout);
}

/// What recv_any() would return, only from `from`; the rest stays queued.
inline Result<Incoming> recv_from(Pid from, Timeout timeout = forever) {
    return detail::receive(true, SHOAL_MATCH_FROM, from.value, timeout);
}

/// The raw selective receive, into a caller's buffer (`filter` is
/// SHOAL_MATCH_FROM or SHOAL_MATCH_REPLY).
inline Result<size_t> recv_match_into(int32_t filter, uint64_t value, void *buf, size_t buf_len,
                                      Timeout timeout, RecvAnyInfo &info) {
    info = RecvAnyInfo{};
    auto n = detail::check(shoal_recv_match(filter, int64_t(value), buf, detail::len32(buf_len),
                                            detail::timeout_ms(timeout), &info));
    if (!n) return n.error();
    return size_t(*n);
}

/// Answers the call that carried `handle`; retries (1 ms sleeps) while even
/// the room kept for replies is in use. Invalid: unknown or answered.
inline Result<void> reply(CallHandle handle, std::string_view data) {
    if (!detail::fits(data.size())) return Errc::TooLarge;
    for (;;) {
        auto r = detail::check_void(shoal_reply(handle.value, data.data(), int32_t(data.size())));
        if (!r.is(Errc::MailboxFull)) return r;
        (void)sleep(std::chrono::milliseconds(1));
    }
}

/// A call that does not wait: take its answer with receive_response().
inline Result<RequestRef> send_request(Pid to, std::string_view request) {
    if (!detail::fits(request.size())) return Errc::TooLarge;
    uint64_t ref = 0;
    auto r = detail::check_void(shoal_send_request(to.value, request.data(), int32_t(request.size()), &ref));
    if (!r) return r.error();
    return RequestRef{ref};
}

/// Waits for the answer to `request` (a capture point): the reply's bytes, or
/// NoProcess, NodeDown, NotCallable, CalleeDown (`down` says why). Timeout
/// leaves the request pending.
inline Result<std::string> receive_response(RequestRef request, Timeout timeout = forever,
                                            Down *down = nullptr) {
    auto in = detail::receive(true, SHOAL_MATCH_REPLY, request.value, timeout);
    if (!in) return in.error();
    if (in->kind == Incoming::Kind::Reply) return std::move(in->data);
    if (down != nullptr) *down = Down{in->reason, in->code, in->data};
    switch (in->reason) {
        case DownReason::NoProc: return Errc::NoProcess;
        case DownReason::NodeDown: return Errc::NodeDown;
        case DownReason::NotCallable: return Errc::NotCallable;
        default: return Errc::CalleeDown;
    }
}

/// Withdraws a pending request: its answer, queued or to come, is dropped.
inline Result<void> cancel_request(RequestRef request) {
    return detail::check_void(shoal_demonitor(request.value));
}

/// Asks for a DOWN (through recv_any) when `pid` ends.
inline Result<MonitorRef> monitor(Pid pid) {
    uint64_t ref = 0;
    auto r = detail::check_void(shoal_monitor(pid.value, &ref));
    if (!r) return r.error();
    return MonitorRef{ref};
}

/// Withdraws a monitor: a DOWN not yet received never will be.
inline Result<void> demonitor(MonitorRef ref) { return detail::check_void(shoal_demonitor(ref.value)); }

// ---- Names and groups (`register` is a C++ keyword: register_name) ------------------

/// Gives this process `name` in its owner's namespace, cluster-wide.
inline Result<void> register_name(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    return detail::check_void(shoal_register(name.data(), int32_t(name.size())));
}

/// Gives `name` up.
inline Result<void> unregister_name(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    return detail::check_void(shoal_unregister(name.data(), int32_t(name.size())));
}

/// The pid `name` names, or NoProcess.
inline Result<Pid> whereis(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    uint64_t pid = 0;
    auto r = detail::check_void(shoal_whereis(name.data(), int32_t(name.size()), &pid));
    if (!r) return r.error();
    return Pid{pid};
}

/// whereis() then call().
inline Result<std::string> call_name(std::string_view name, std::string_view request,
                                     Timeout timeout = std::chrono::seconds(5), Down *down = nullptr) {
    auto pid = whereis(name);
    if (!pid) return pid.error();
    return call(*pid, request, timeout, down);
}

/// Joins the group `name`.
inline Result<void> join_group(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    return detail::check_void(shoal_join_group(name.data(), int32_t(name.size())));
}

/// Leaves the group `name`.
inline Result<void> leave_group(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    return detail::check_void(shoal_leave_group(name.data(), int32_t(name.size())));
}

/// One live member of the group (this node's first, in turn), or NoProcess.
inline Result<Pid> group_pick(std::string_view name) {
    if (!detail::fits(name.size())) return Errc::Invalid;
    uint64_t pid = 0;
    auto r = detail::check_void(shoal_group_pick(name.data(), int32_t(name.size()), &pid));
    if (!r) return r.error();
    return Pid{pid};
}

// ---- Locks ------------------------------------------------------------------------

/// A cluster-wide lock held by this process, with its fencing token.
class Lock {
public:
    /// Waits (a capture point) at most `timeout` until this process holds
    /// `name`. Timeout, Deadlock, Quota, Unavailable, ...
    static Result<Lock> acquire(std::string_view name, Timeout timeout = forever) {
        if (!detail::fits(name.size())) return Errc::Invalid;
        uint64_t token = 0;
        auto r = detail::check_void(shoal_lock(name.data(), int32_t(name.size()), detail::timeout_ms(timeout), &token));
        if (!r) return r.error();
        return Lock(name, token);
    }

    /// acquire() without waiting: Busy if another process holds it.
    static Result<Lock> try_acquire(std::string_view name) {
        if (!detail::fits(name.size())) return Errc::Invalid;
        uint64_t token = 0;
        auto r = detail::check_void(shoal_try_lock(name.data(), int32_t(name.size()), &token));
        if (!r) return r.error();
        return Lock(name, token);
    }

    /// Whether `token` is the current grant of lock `name` (else Fenced).
    static Result<void> check(std::string_view name, uint64_t token) {
        if (!detail::fits(name.size())) return Errc::Invalid;
        return detail::check_void(shoal_lock_check(name.data(), int32_t(name.size()), int64_t(token)));
    }

    /// Releases it; LockLost if it is not held under this token any more.
    Result<void> unlock() const {
        return detail::check_void(shoal_unlock(name_.data(), int32_t(name_.size()), int64_t(token_)));
    }

    const std::string &name() const { return name_; }
    uint64_t token() const { return token_; }

    /// The fence record for writes guarded by this lock (points into this
    /// Lock: keep it alive while the record is used).
    shoal_fence fence() const {
        return shoal_fence{token_, uint32_t(uintptr_t(name_.data())), uint32_t(name_.size())};
    }

private:
    Lock(std::string_view name, uint64_t token) : name_(name), token_(token) {}
    std::string name_;
    uint64_t token_;
};

// ---- Key-value ------------------------------------------------------------------------

/// A value read from a Bucket, with its version.
struct Entry {
    std::string value;
    uint64_t version = 0;
};

using KvInfo = shoal_kv_info;

/// Bounds of a key-value batch (get_many, set_many, remove_many): 1 to
/// max_batch_entries entries and at most max_batch_bytes of keys and
/// values, else BadBatch.
inline constexpr size_t max_batch_entries = SHOAL_KV_BATCH_ENTRIES_MAX;
inline constexpr size_t max_batch_bytes = SHOAL_KV_BATCH_BYTES_MAX;

/// One entry of a set_many() batch: key, value.
using KeyValue = std::pair<std::string_view, std::string_view>;

/// Encodes `keys` (strings) as kv_get_many and kv_delete_many take them (and
/// kv_list answers them): each a 2-byte little-endian length, then the key.
/// BadKey for a key whose length does not fit 2 bytes (the host refuses
/// keys over 256 bytes with BadKey too); the batch's bounds are the host's
/// to check.
template <class Keys>
inline Result<std::string> encode_keys(const Keys &keys) {
    std::string out;
    for (std::string_view k : keys) {
        if (k.size() > 0xFFFF) return Errc::BadKey;
        out.push_back(char(k.size() & 0xFF));
        out.push_back(char(k.size() >> 8));
        out.append(k.data(), k.size());
    }
    return out;
}
inline Result<std::string> encode_keys(std::initializer_list<std::string_view> keys) {
    return encode_keys<std::initializer_list<std::string_view>>(keys);
}

/// Encodes `entries` (pairs of strings: key, value) as kv_set_many takes
/// them: each a 2-byte little-endian key length, the key, a 4-byte
/// little-endian value length and the value. BadKey / ValueTooLarge for a
/// length that does not fit its field.
template <class Entries>
inline Result<std::string> encode_entries(const Entries &entries) {
    std::string out;
    for (const auto &entry : entries) {
        std::string_view k(entry.first), v(entry.second);
        if (k.size() > 0xFFFF) return Errc::BadKey;
        if (v.size() > 0xFFFFFFFFu) return Errc::ValueTooLarge;
        out.push_back(char(k.size() & 0xFF));
        out.push_back(char(k.size() >> 8));
        out.append(k.data(), k.size());
        for (int shift = 0; shift < 32; shift += 8) out.push_back(char((uint64_t(v.size()) >> shift) & 0xFF));
        out.append(v.data(), v.size());
    }
    return out;
}
inline Result<std::string> encode_entries(std::initializer_list<KeyValue> entries) {
    return encode_entries<std::initializer_list<KeyValue>>(entries);
}

/// Decodes kv_get_many's records (from Bucket::get_many_into): one per key,
/// in order, std::nullopt for an absent key. Invalid if malformed.
inline Result<std::vector<std::optional<Entry>>> decode_many(std::string_view records) {
    std::vector<std::optional<Entry>> out;
    const auto *p = reinterpret_cast<const uint8_t *>(records.data());
    size_t at = 0;
    while (at < records.size()) {
        if (records.size() - at < SHOAL_KV_MANY_RECORD_HEADER_BYTES) return Errc::Invalid;
        uint64_t version = 0;
        uint32_t len = 0;
        for (int i = 7; i >= 0; i--) version = (version << 8) | p[at + size_t(i)];
        for (int i = 3; i >= 0; i--) len = (len << 8) | p[at + 8 + size_t(i)];
        const size_t start = at + SHOAL_KV_MANY_RECORD_HEADER_BYTES;
        if (records.size() - start < len) return Errc::Invalid;
        if (version == 0) out.emplace_back();
        else out.emplace_back(Entry{std::string(records.substr(start, len)), version});
        at = start + len;
    }
    return out;
}

/// A bucket of keys of this process's owner, replicated by the cluster.
/// Reads are linearizable unless the bucket is stale().
class Bucket {
public:
    explicit Bucket(std::string_view name, int32_t flags = 0) : name_(name), flags_(flags) {}

    /// The same bucket, read from this node's applied state.
    Bucket stale() const { return Bucket(name_, SHOAL_KV_STALE); }
    const std::string &name() const { return name_; }

    /// kv_get into a caller's buffer: the value's length; `info` gets the
    /// version (and the length, also on BufferTooSmall). NotFound if absent.
    Result<size_t> get_into(std::string_view key, void *buf, size_t buf_len, KvInfo &info) const {
        info = KvInfo{};
        auto n = detail::check(shoal_kv_get(name_.data(), b_len(), u8(key), k_len(key), flags_,
                                            static_cast<uint8_t *>(buf), detail::len32(buf_len), &info));
        if (!n) return n.error();
        if (*n > buf_len) return Errc::Invalid;
        return size_t(*n);
    }

    /// The entry at `key`, or std::nullopt if absent (any size).
    Result<std::optional<Entry>> get(std::string_view key) const {
        std::string buf(256, '\0');
        for (;;) {
            KvInfo info;
            auto n = get_into(key, buf.data(), buf.size(), info);
            if (n) {
                buf.resize(*n);
                return std::optional<Entry>(Entry{std::move(buf), info.version});
            }
            if (n.is(Errc::NotFound)) return std::optional<Entry>();
            if (n.is(Errc::BufferTooSmall) && info.length > buf.size() && info.length <= SHOAL_MAX_MESSAGE_SIZE) {
                buf.resize(size_t(info.length));
                continue;
            }
            return n.error();
        }
    }

    /// Whether `key` exists.
    Result<bool> exists(std::string_view key) const {
        auto n = detail::check(shoal_kv_exists(name_.data(), b_len(), u8(key), k_len(key), flags_));
        if (!n) return n.error();
        return *n == 1;
    }

    /// Sets `key`; returns the entry's new version.
    Result<uint64_t> set(std::string_view key, std::string_view value) const { return write(key, value, false, 0, nullptr); }
    /// set() applied only while `lock` is the lock's current grant (else Fenced).
    Result<uint64_t> set_fenced(std::string_view key, std::string_view value, const Lock &lock) const {
        auto f = lock.fence();
        return write(key, value, false, 0, &f);
    }
    /// set() only if `key` is at `expected` (0: absent), else VersionMismatch.
    Result<uint64_t> cas(std::string_view key, uint64_t expected, std::string_view value) const {
        return write(key, value, true, expected, nullptr);
    }
    /// cas() fenced by `lock`.
    Result<uint64_t> cas_fenced(std::string_view key, uint64_t expected, std::string_view value, const Lock &lock) const {
        auto f = lock.fence();
        return write(key, value, true, expected, &f);
    }

    /// Deletes `key` (`delete` is a keyword); whether it existed.
    Result<bool> remove(std::string_view key) const { return del(key, nullptr); }
    /// remove() fenced by `lock`.
    Result<bool> remove_fenced(std::string_view key, const Lock &lock) const {
        auto f = lock.fence();
        return del(key, &f);
    }

    /// Adds `delta` to the counter at `key` (8 bytes LE; absent: 0); its new value.
    Result<int64_t> increment(std::string_view key, int64_t delta) const {
        int64_t value = 0;
        auto r = detail::check_void(shoal_kv_increment(name_.data(), b_len(), u8(key), k_len(key), delta, &value));
        if (!r) return r.error();
        return value;
    }

    /// One page of keys starting with `prefix`, after `cursor` (empty: from
    /// the first), in byte order, decoded from a buffer of `buf_size` bytes.
    /// An empty page is the end; pass the page's last key as the next cursor.
    Result<std::vector<std::string>> list_page(std::string_view prefix, std::string_view cursor,
                                               size_t buf_size = 64 * 1024) const {
        std::vector<uint8_t> buf(buf_size);
        auto n = detail::check(shoal_kv_list(name_.data(), b_len(), u8(prefix), k_len(prefix), u8(cursor),
                                             k_len(cursor), flags_, buf.data(), detail::len32(buf.size())));
        if (!n) return n.error();
        std::vector<std::string> keys;
        size_t at = 0;
        for (uint32_t i = 0; i < *n; i++) {
            if (at + 2 > buf.size()) return Errc::Invalid;
            size_t len = size_t(buf[at]) | (size_t(buf[at + 1]) << 8);
            if (at + 2 + len > buf.size()) return Errc::Invalid;
            keys.emplace_back(reinterpret_cast<const char *>(buf.data() + at + 2), len);
            at += 2 + len;
        }
        return keys;
    }

    /// kv_get_many into a caller's buffer, of keys encoded by encode_keys():
    /// the records' length (decode them with decode_many()); `size` gets
    /// their total, also on BufferTooSmall (then: the buffer size needed).
    Result<size_t> get_many_into(std::string_view encoded_keys, void *buf, size_t buf_len, uint64_t &size) const {
        size = 0;
        auto n = detail::check(shoal_kv_get_many(name_.data(), b_len(), u8(encoded_keys), k_len(encoded_keys), flags_,
                                                 static_cast<uint8_t *>(buf), detail::len32(buf_len), &size));
        if (!n) return n.error();
        if (*n > buf_len) return Errc::Invalid;
        return size_t(*n);
    }

    /// The entries of `keys` (1 to max_batch_entries strings), all read from
    /// one state, in order; std::nullopt for an absent key. Any size: the
    /// buffer starts small and grows to the size the host asks for.
    /// BadBatch, or as get().
    template <class Keys>
    Result<std::vector<std::optional<Entry>>> get_many(const Keys &keys) const {
        auto encoded = encode_keys(keys);
        if (!encoded) return encoded.error();
        size_t count = 0;
        for (std::string_view k : keys) {
            (void)k;
            count++;
        }
        std::string buf(256, '\0');
        for (;;) {
            uint64_t size = 0;
            auto n = get_many_into(*encoded, buf.data(), buf.size(), size);
            if (n) {
                auto entries = decode_many(std::string_view(buf.data(), *n));
                if (entries && entries->size() != count) return Errc::Invalid;
                return entries;
            }
            if (n.is(Errc::BufferTooSmall) && size > buf.size() && size <= uint64_t(std::numeric_limits<int32_t>::max())) {
                buf.resize(size_t(size));
                continue;
            }
            return n.error();
        }
    }
    Result<std::vector<std::optional<Entry>>> get_many(std::initializer_list<std::string_view> keys) const {
        return get_many<std::initializer_list<std::string_view>>(keys);
    }

    /// Sets every (key, value) of `entries` (1 to max_batch_entries, at most
    /// max_batch_bytes) in one write, all or nothing (a key named twice: the
    /// last value wins); how many. BadBatch, or as set() (one refusal
    /// refuses the whole batch).
    template <class Entries>
    Result<uint32_t> set_many(const Entries &entries) const { return write_many(true, encode_entries(entries), nullptr); }
    Result<uint32_t> set_many(std::initializer_list<KeyValue> entries) const {
        return write_many(true, encode_entries(entries), nullptr);
    }
    /// set_many() fenced by `lock` (one check covers the whole batch).
    template <class Entries>
    Result<uint32_t> set_many_fenced(const Entries &entries, const Lock &lock) const {
        auto f = lock.fence();
        return write_many(true, encode_entries(entries), &f);
    }
    Result<uint32_t> set_many_fenced(std::initializer_list<KeyValue> entries, const Lock &lock) const {
        auto f = lock.fence();
        return write_many(true, encode_entries(entries), &f);
    }

    /// Deletes every key of `keys` in one write, all or nothing (kv_delete_many;
    /// `delete` is a keyword); how many existed. As set_many().
    template <class Keys>
    Result<uint32_t> remove_many(const Keys &keys) const { return write_many(false, encode_keys(keys), nullptr); }
    Result<uint32_t> remove_many(std::initializer_list<std::string_view> keys) const {
        return write_many(false, encode_keys(keys), nullptr);
    }
    /// remove_many() fenced by `lock`.
    template <class Keys>
    Result<uint32_t> remove_many_fenced(const Keys &keys, const Lock &lock) const {
        auto f = lock.fence();
        return write_many(false, encode_keys(keys), &f);
    }
    Result<uint32_t> remove_many_fenced(std::initializer_list<std::string_view> keys, const Lock &lock) const {
        auto f = lock.fence();
        return write_many(false, encode_keys(keys), &f);
    }

    /// Every key starting with `prefix`, all pages.
    Result<std::vector<std::string>> keys(std::string_view prefix = {}) const {
        std::vector<std::string> all;
        for (;;) {
            auto page = list_page(prefix, all.empty() ? std::string_view() : std::string_view(all.back()));
            if (!page) return page.error();
            if (page->empty()) return all;
            for (auto &k : *page) all.push_back(std::move(k));
        }
    }

private:
    static const uint8_t *u8(std::string_view s) { return reinterpret_cast<const uint8_t *>(s.data()); }
    int32_t b_len() const { return detail::len32(name_.size()); }
    static int32_t k_len(std::string_view s) { return detail::len32(s.size()); }

    Result<uint64_t> write(std::string_view key, std::string_view value, bool cas, uint64_t expected,
                           const shoal_fence *fence) const {
        if (!detail::fits(value.size())) return Errc::ValueTooLarge;
        uint64_t version = 0;
        int32_t rc = cas ? shoal_kv_cas(name_.data(), b_len(), u8(key), k_len(key), int64_t(expected), u8(value),
                                        int32_t(value.size()), fence, &version)
                         : shoal_kv_set(name_.data(), b_len(), u8(key), k_len(key), u8(value),
                                        int32_t(value.size()), fence, &version);
        auto r = detail::check_void(rc);
        if (!r) return r.error();
        return version;
    }

    Result<uint32_t> write_many(bool set, const Result<std::string> &encoded, const shoal_fence *fence) const {
        if (!encoded) return encoded.error();
        const std::string &e = *encoded;
        if (!detail::fits(e.size())) return Errc::BadBatch;
        int32_t rc = set ? shoal_kv_set_many(name_.data(), b_len(), u8(e), int32_t(e.size()), fence)
                         : shoal_kv_delete_many(name_.data(), b_len(), u8(e), int32_t(e.size()), fence);
        return detail::check(rc);
    }

    Result<bool> del(std::string_view key, const shoal_fence *fence) const {
        auto n = detail::check(shoal_kv_delete(name_.data(), b_len(), u8(key), k_len(key), fence));
        if (!n) return n.error();
        return *n == 1;
    }

    std::string name_;
    int32_t flags_;
};

}  // namespace shoal

#endif  // SHOAL_HPP
