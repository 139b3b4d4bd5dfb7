// cpp_allimports: calls every shoal_v1 import through the C++ SDK
// (sdk/cpp/shoal.hpp) and checks each result.
//
// Modes (first argument):
//
// - `[<self-ref>]` (no argument, or one that is not `helper`): the checks.
//   <self-ref> (default: argv[0]) is how this module is spawned again as a
//   helper, so it must be a registered name or `sha256:` reference
//   (`shoal run` of a pushed name passes the name as argv[0]; `shoal deploy`
//   passes the file name, so give the reference explicitly there). Prints
//   `ok <import>: <what>` or `FAIL <import>: <what>: <got>` per check and
//   finally `all imports ok (<n> checks)` (exit 0), or `allimports: <n> of
//   <m> checks failed` (exit 1). Off a cluster (`shoal run`) names,
//   key-value and locks answer NO_NODE, as the ABI says; the checks then
//   expect exactly that and print `standalone: ...` first. In a cluster
//   (even of one node: `shoal node start` + `shoal deploy`) they are checked
//   for real.
// - `helper`: the peer. Loops on recv_any: a call `echo:<x>` is answered
//   `<x>`; a call `lock:<name>` does try_lock and answers `locked <token>` or
//   `err <code>`; a plain message `ping` is answered (plain) `pong`; a plain
//   message `exit <code>` exits with that code.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "shoal.hpp"

using namespace std::chrono_literals;
using shoal::Errc;

namespace {

constexpr auto wait = std::chrono::milliseconds(5000);
unsigned checks = 0;
unsigned failures = 0;

void ok(const char *import, const char *what) {
    checks++;
    std::printf("ok %s: %s\n", import, what);
}

void fail(const char *import, const char *what, const std::string &got) {
    checks++;
    failures++;
    std::printf("FAIL %s: %s: got %s\n", import, what, got.c_str());
}

void expect(const char *import, const char *what, bool cond) {
    if (cond) ok(import, what); else fail(import, what, "false");
}

std::string describe(int32_t code) { return std::string(shoal::code_name(code)) + " (" + std::to_string(code) + ")"; }

/// `r` must be the error `want`.
template <class R>
void expect_err(const char *import, const char *what, const R &r, Errc want) {
    if (r.is(want)) ok(import, what);
    else fail(import, what, (r.ok() ? std::string("success") : describe(r.code())) + ", expected " + shoal::to_string(want));
}

/// A raw result must be `want`.
void expect_code(const char *import, const char *what, int32_t rc, int32_t want) {
    if (rc == want) ok(import, what);
    else fail(import, what, describe(rc) + ", expected " + describe(want));
}

/// `r` must be a success; returns whether it was.
template <class R>
bool expect_ok(const char *import, const char *what, const R &r) {
    if (r.ok()) return true;
    fail(import, what, describe(r.code()));
    return false;
}

[[noreturn]] void helper() {
    for (;;) {
        auto in = shoal::recv_any();
        if (!in) {
            std::fprintf(stderr, "cpp_allimports helper: recv_any: %s\n", shoal::to_string(in.error()));
            shoal::exit(1);
        }
        if (in->is_call()) {
            std::string answer = "?";
            if (in->data.rfind("echo:", 0) == 0) {
                answer = in->data.substr(5);
            } else if (in->data.rfind("lock:", 0) == 0) {
                auto l = shoal::Lock::try_acquire(std::string_view(in->data).substr(5));
                answer = l ? "locked " + std::to_string(l->token()) : "err " + std::to_string(l.code());
            }
            if (auto r = shoal::reply(in->handle(), answer); !r)
                std::fprintf(stderr, "cpp_allimports helper: reply: %s\n", shoal::to_string(r.error()));
        } else if (in->is_message()) {
            if (in->data == "ping") {
                if (auto r = shoal::send_blocking(in->from, "pong"); !r)
                    std::fprintf(stderr, "cpp_allimports helper: send: %s\n", shoal::to_string(r.error()));
            } else if (in->data.rfind("exit ", 0) == 0) {
                shoal::exit(std::atoi(in->data.c_str() + 5));
            }
        }
    }
}

/// The 4 records of get_many [k1, absent, k2, k3] after set_many of k1
/// (`v1`), k2 ("two"), k3 ("three").
bool many_as_set(const std::vector<std::optional<shoal::Entry>> &got, const std::string &v1) {
    return got.size() == 4 && got[0] && got[0]->value == v1 && got[0]->version > 0 && !got[1] && got[2] &&
           got[2]->value == "two" && got[2]->version > 0 && got[3] && got[3]->value == "three" && got[3]->version > 0;
}

void batch_checks(const shoal::Bucket &bucket, shoal::Pid me) {
    const std::string id = std::to_string(me.raw());
    const std::string k1 = "b1-" + id, k2 = "b2-" + id, k3 = "b3-" + id, k4 = "b4-" + id, absent = "b0-" + id;
    std::string big(3000, '\0');
    for (size_t i = 0; i < big.size(); i++) big[i] = char('a' + i % 26);

    // kv_set_many: 3 entries, k1's value 3000 bytes
    if (auto n = bucket.set_many({{k1, big}, {k2, "two"}, {k3, "three"}}); expect_ok("kv_set_many", "3 entries", n))
        expect("kv_set_many", "3 entries: 3", *n == 3);

    // kv_get_many [k1, absent, k2, k3]
    const std::vector<std::string> keys = {k1, absent, k2, k3};
    if (auto enc = shoal::encode_keys(keys); expect_ok("kv_get_many", "encode 4 keys", enc)) {
        const uint64_t want = 4 * SHOAL_KV_MANY_RECORD_HEADER_BYTES + big.size() + 3 + 5;
        std::string small(256, '\0');
        uint64_t size = 0;
        expect_err("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL",
                   bucket.get_many_into(*enc, small.data(), small.size(), size), Errc::BufferTooSmall);
        if (size == want) ok("kv_get_many", "the size written tells the total (3056)");
        else fail("kv_get_many", "the size written tells the total", std::to_string(size) + ", expected " + std::to_string(want));
        std::string grown(size_t(std::min<uint64_t>(size, 1u << 20)), '\0');
        uint64_t size2 = 0;
        if (auto n = bucket.get_many_into(*enc, grown.data(), grown.size(), size2); expect_ok("kv_get_many", "a buffer of that size", n)) {
            auto got = shoal::decode_many(std::string_view(grown.data(), *n));
            expect("kv_get_many", "a buffer of that size: the 4 in order, the absent one nullopt", got && many_as_set(*got, big));
        }
    }
    if (auto got = bucket.get_many(keys); expect_ok("kv_get_many", "get_many", got))
        expect("kv_get_many", "get_many grows from 256 bytes: the 4 in order", many_as_set(*got, big));
    if (auto got = bucket.stale().get_many(keys); expect_ok("kv_get_many", "KV_STALE read", got))
        expect("kv_get_many", "KV_STALE read on the writer's node", many_as_set(*got, big));

    // kv_set_many with an empty key: refused whole
    expect_err("kv_set_many", "an empty key in the batch is BAD_KEY", bucket.set_many({{k4, "x"}, {"", "y"}}), Errc::BadKey);
    if (auto x = bucket.exists(k4); expect_ok("kv_exists", "the refused batch's other key", x))
        expect("kv_set_many", "the refused batch set nothing (its other key: 0)", !*x);

    // batch bounds
    expect_err("kv_get_many", "0 keys is BAD_BATCH", bucket.get_many({}), Errc::BadBatch);
    std::vector<std::string> many;
    for (size_t i = 0; i <= shoal::max_batch_entries; i++) many.push_back("b-" + std::to_string(i));
    expect_err("kv_get_many", "101 keys is BAD_BATCH", bucket.get_many(many), Errc::BadBatch);

    // kv_delete_many [k1, absent, k3]
    if (auto n = bucket.remove_many({k1, absent, k3}); expect_ok("kv_delete_many", "[k1, absent, k3]", n))
        expect("kv_delete_many", "[k1, absent, k3]: 2", *n == 2);
    if (auto x = bucket.exists(k1); expect_ok("kv_exists", "k1 after kv_delete_many", x)) expect("kv_delete_many", "k1 is gone", !*x);
    if (auto x = bucket.remove(k2); expect_ok("kv_delete", "the batch's k2", x)) expect("kv_delete", "the batch's k2, left alone: 1", *x);
}

void cluster_checks(shoal::Pid me, shoal::Pid helper2, const std::string &name) {
    // names
    if (auto p = shoal::whereis(name); expect_ok("whereis", "finds oneself", p)) expect("whereis", "finds oneself", *p == me);
    if (expect_ok("unregister", "the name", shoal::unregister_name(name))) ok("unregister", "the name");
    expect_err("unregister", "again is INVALID", shoal::unregister_name(name), Errc::Invalid);
    expect_err("whereis", "a free name is NO_PROCESS", shoal::whereis(name), Errc::NoProcess);
    if (expect_ok("join_group", "a fresh group", shoal::join_group(name))) ok("join_group", "a fresh group");
    if (auto p = shoal::group_pick(name); expect_ok("group_pick", "picks the only member", p))
        expect("group_pick", "picks the only member", *p == me);
    if (expect_ok("leave_group", "the group", shoal::leave_group(name))) ok("leave_group", "the group");
    expect_err("leave_group", "again is INVALID", shoal::leave_group(name), Errc::Invalid);
    expect_err("group_pick", "an empty group is NO_PROCESS", shoal::group_pick(name), Errc::NoProcess);

    // key-value
    shoal::Bucket bucket("cpp-allimports");
    const std::string key = "k-" + std::to_string(me.raw());
    const std::string ctr = "n-" + std::to_string(me.raw());
    if (auto e = bucket.get(key); expect_ok("kv_get", "a fresh key is absent", e))
        expect("kv_get", "a fresh key is absent (NOT_FOUND)", !e->has_value());
    if (auto x = bucket.exists(key); expect_ok("kv_exists", "a fresh key", x)) expect("kv_exists", "a fresh key: 0", !*x);
    uint64_t v1 = 0;
    if (auto v = bucket.set(key, "v1"); expect_ok("kv_set", "returns a version", v)) {
        v1 = *v;
        expect("kv_set", "returns a version", v1 > 0);
    }
    if (auto e = bucket.get(key); expect_ok("kv_get", "reads the value and version", e))
        expect("kv_get", "reads the value and version", e->has_value() && (*e)->value == "v1" && (*e)->version == v1);
    {
        char small[1];
        shoal::KvInfo info;
        expect_err("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", bucket.get_into(key, small, sizeof small, info), Errc::BufferTooSmall);
        expect("kv_get", "info.length tells the size (2)", info.length == 2);
    }
    if (auto e = bucket.stale().get(key); expect_ok("kv_get", "KV_STALE read", e))
        expect("kv_get", "KV_STALE read on the writer's node", e->has_value() && (*e)->value == "v1");
    if (auto x = bucket.exists(key); expect_ok("kv_exists", "after set", x)) expect("kv_exists", "after set: 1", *x);
    expect_err("kv_cas", "expecting absent (0) is VERSION_MISMATCH", bucket.cas(key, 0, "no"), Errc::VersionMismatch);
    if (auto v2 = bucket.cas(key, v1, "v2"); expect_ok("kv_cas", "at the right version", v2))
        expect("kv_cas", "at the right version", *v2 > v1);
    if (auto n = bucket.increment(ctr, 5); expect_ok("kv_increment", "absent + 5", n)) expect("kv_increment", "absent + 5 = 5", *n == 5);
    if (auto n = bucket.increment(ctr, -2); expect_ok("kv_increment", "5 - 2", n)) expect("kv_increment", "5 - 2 = 3", *n == 3);
    expect_err("kv_increment", "a 2-byte value is NOT_A_COUNTER", bucket.increment(key, 1), Errc::NotACounter);
    if (auto page = bucket.list_page(key, ""); expect_ok("kv_list", "the prefix lists the one key", page))
        expect("kv_list", "the prefix lists the one key", page->size() == 1 && (*page)[0] == key);
    if (auto page = bucket.list_page(key, key); expect_ok("kv_list", "after the last key", page))
        expect("kv_list", "after the last key: 0", page->empty());
    batch_checks(bucket, me);

    // locks (and fenced writes)
    const std::string lock_name = "cpp-allimports-" + std::to_string(me.raw());
    const std::string lock_call = "lock:" + lock_name;
    auto l = shoal::Lock::acquire(lock_name, wait);
    if (expect_ok("lock", "a free lock", l)) {
        ok("lock", "a free lock");
        if (expect_ok("lock_check", "the current token", shoal::Lock::check(lock_name, l->token())))
            ok("lock_check", "the current token");
        expect_err("lock_check", "another token is FENCED", shoal::Lock::check(lock_name, l->token() + 1), Errc::Fenced);
        if (auto again = shoal::Lock::try_acquire(lock_name); expect_ok("try_lock", "held by oneself", again))
            expect("try_lock", "held by oneself: the same token", again->token() == l->token());
        if (expect_ok("kv_set", "fenced by the held lock", bucket.set_fenced(key, "v3", *l)))
            ok("kv_set", "fenced by the held lock");
        if (auto n = bucket.set_many_fenced({{key, "v3"}}, *l); expect_ok("kv_set_many", "fenced by the held lock", n))
            expect("kv_set_many", "fenced by the held lock: 1", *n == 1);
        if (auto r = shoal::call(helper2, lock_call, wait); expect_ok("call", "the second helper's try_lock", r))
            expect("try_lock", "held by another process: BUSY (-26)", *r == "err -26");
        if (expect_ok("unlock", "the held lock", l->unlock())) ok("unlock", "the held lock");
        expect_err("unlock", "again is LOCK_LOST", l->unlock(), Errc::LockLost);
        if (auto r = shoal::call(helper2, lock_call, wait); expect_ok("call", "the second helper's try_lock", r))
            expect("try_lock", "the second helper gets the free lock", r->rfind("locked ", 0) == 0);
        expect_err("kv_set", "fenced by a lost lock is FENCED", bucket.set_fenced(key, "v4", *l), Errc::Fenced);
        expect_err("kv_cas", "fenced by a lost lock is FENCED", bucket.cas_fenced(key, 0, "v4", *l), Errc::Fenced);
        expect_err("kv_delete", "fenced by a lost lock is FENCED", bucket.remove_fenced(key, *l), Errc::Fenced);
        expect_err("kv_set_many", "fenced by a lost lock is FENCED", bucket.set_many_fenced({{key, "v4"}}, *l), Errc::Fenced);
        expect_err("kv_delete_many", "fenced by a lost lock is FENCED", bucket.remove_many_fenced({key}, *l), Errc::Fenced);
    }

    if (auto x = bucket.remove(key); expect_ok("kv_delete", "an existing key", x)) expect("kv_delete", "an existing key: 1", *x);
    if (auto x = bucket.remove(key); expect_ok("kv_delete", "again", x)) expect("kv_delete", "again: 0", !*x);
    if (auto x = bucket.remove(ctr); expect_ok("kv_delete", "the counter", x)) expect("kv_delete", "the counter: 1", *x);
}

void standalone_checks(const std::string &name) {
    const Errc nn = Errc::NoNode;
    expect_err("unregister", "NO_NODE", shoal::unregister_name(name), nn);
    expect_err("whereis", "NO_NODE", shoal::whereis(name), nn);
    expect_err("join_group", "NO_NODE", shoal::join_group(name), nn);
    expect_err("leave_group", "NO_NODE", shoal::leave_group(name), nn);
    expect_err("group_pick", "NO_NODE", shoal::group_pick(name), nn);
    shoal::Bucket b("cpp-allimports");
    expect_err("kv_get", "NO_NODE", b.get("k"), nn);
    expect_err("kv_exists", "NO_NODE", b.exists("k"), nn);
    expect_err("kv_set", "NO_NODE", b.set("k", "v"), nn);
    expect_err("kv_cas", "NO_NODE", b.cas("k", 0, "v"), nn);
    expect_err("kv_delete", "NO_NODE", b.remove("k"), nn);
    expect_err("kv_increment", "NO_NODE", b.increment("n", 1), nn);
    expect_err("kv_list", "NO_NODE", b.list_page("", ""), nn);
    expect_err("kv_get_many", "NO_NODE", b.get_many({"k"}), nn);
    expect_err("kv_set_many", "NO_NODE", b.set_many({{"k", "v"}}), nn);
    expect_err("kv_delete_many", "NO_NODE", b.remove_many({"k"}), nn);
    expect_err("lock", "NO_NODE", shoal::Lock::acquire(name, 100ms), nn);
    expect_err("try_lock", "NO_NODE", shoal::Lock::try_acquire(name), nn);
    // No Lock object exists here (nothing was granted): the raw imports.
    expect_code("unlock", "NO_NODE", shoal_unlock(name.data(), int32_t(name.size()), 1), SHOAL_ENO_NODE);
    expect_err("lock_check", "NO_NODE", shoal::Lock::check(name, 1), nn);
}

void run(const std::string &self_ref) {
    // self_pid
    const shoal::Pid me = shoal::self_pid();
    expect("self_pid", "non-zero", me.raw() != 0);

    // log
    if (expect_ok("log", "info line", shoal::log(shoal::Level::Info, "cpp_allimports: start"))) ok("log", "info line");
    expect_code("log", "level 9 is INVALID", shoal_log(9, "x", 1), SHOAL_EINVALID);

    // sleep_ms, yield_now, preempt
    if (expect_ok("sleep_ms", "1 ms", shoal::sleep(1ms))) ok("sleep_ms", "1 ms");
    expect_code("sleep_ms", "-1 is INVALID", shoal_sleep_ms(-1), SHOAL_EINVALID);
    if (expect_ok("yield_now", "returns OK", shoal::yield_now())) ok("yield_now", "returns OK");
    shoal::preempt();
    ok("preempt", "returns (reserved for the host; harmless)");

    // spawn, spawn_on
    expect_err("spawn", "unknown module is NO_MODULE", shoal::spawn("no-such-module-cpp-allimports"), Errc::NoModule);
    auto helper_pid = shoal::spawn(self_ref, {"helper"});
    if (!helper_pid) {
        fail("spawn", "a helper from <self-ref>", describe(helper_pid.code()));
        std::printf("allimports: cannot spawn '%s': run it by a registered name or pass its reference as the argument\n",
                    self_ref.c_str());
        return;
    }
    const shoal::Pid helper = *helper_pid;
    expect("spawn", "a helper from <self-ref>", helper != me);
    expect_err("spawn_on", "unknown node is NO_NODE", shoal::spawn_on("no-such-node-cpp", self_ref, {"helper"}), Errc::NoNode);
    auto helper2_pid = shoal::spawn_on("", self_ref, {"helper"});
    if (!helper2_pid) {
        fail("spawn_on", "empty target starts a second helper", describe(helper2_pid.code()));
        return;
    }
    ok("spawn_on", "empty target starts a second helper");
    const shoal::Pid helper2 = *helper2_pid;

    // send, recv
    if (expect_ok("send", "to self", shoal::send(me, "note"))) ok("send", "to self");
    {
        shoal::RecvInfo info;
        char none[1];
        expect_err("recv", "0-byte buffer is BUFFER_TOO_SMALL", shoal::recv_into(none, 0, 0ms, info), Errc::BufferTooSmall);
        expect("recv", "info.length tells the size (4)", info.length == 4);
        if (auto m = shoal::recv(wait); expect_ok("recv", "the message is still queued", m))
            expect("recv", "the message is still queued and arrives whole", m->sender == me && m->data == "note");
        expect_err("recv", "empty mailbox polls TIMEOUT", shoal::recv(0ms), Errc::Timeout);
    }
    expect_err("send", "unknown pid is NO_PROCESS", shoal::send(shoal::Pid{0xFFFFFFFFFFFFFFF0ull}, "x"), Errc::NoProcess);

    // call, reply (the helper replies)
    if (auto r = shoal::call(helper, "echo:hello", wait); expect_ok("call", "helper echoes (reply)", r))
        expect("call", "helper echoes (reply)", *r == "hello");
    expect_err("call", "calling oneself is INVALID", shoal::call(me, "echo:x", wait), Errc::Invalid);
    expect_err("reply", "unknown handle is INVALID", shoal::reply(shoal::CallHandle{0x777700001234ull}, "x"), Errc::Invalid);

    // send_request, recv_match (MATCH_REPLY)
    if (auto req = shoal::send_request(helper, "echo:request"); expect_ok("send_request", "to the helper", req)) {
        ok("send_request", "to the helper");
        if (auto r = shoal::receive_response(*req, wait); expect_ok("recv_match", "MATCH_REPLY gets the answer", r))
            expect("recv_match", "MATCH_REPLY gets the answer", *r == "request");
    }

    // recv_match (MATCH_FROM) leaves other mail queued
    (void)shoal::send(me, "mine");
    if (auto r = shoal::send(helper, "ping"); !r) fail("send", "ping to the helper", describe(r.code()));
    if (auto in = shoal::recv_from(helper, wait); expect_ok("recv_match", "MATCH_FROM takes the helper's pong", in))
        expect("recv_match", "MATCH_FROM takes the helper's pong", in->is_message() && in->from == helper && in->data == "pong");
    if (auto m = shoal::recv(0ms); expect_ok("recv", "own message skipped by MATCH_FROM", m))
        expect("recv", "own message skipped by MATCH_FROM is still queued", m->data == "mine");

    // monitor, demonitor, recv_any (DOWN), exit (the helper's)
    if (auto m1 = shoal::monitor(helper); expect_ok("monitor", "the helper", m1)) {
        ok("monitor", "the helper");
        if (expect_ok("demonitor", "withdraws it", shoal::demonitor(*m1))) ok("demonitor", "withdraws it");
        expect_err("demonitor", "again is INVALID", shoal::demonitor(*m1), Errc::Invalid);
    }
    expect_err("monitor", "oneself is INVALID", shoal::monitor(me), Errc::Invalid);
    if (auto m2 = shoal::monitor(helper); expect_ok("monitor", "the helper again", m2)) {
        if (auto r = shoal::send(helper, "exit 7"); !r) fail("send", "exit 7 to the helper", describe(r.code()));
        if (auto in = shoal::recv_any(wait); expect_ok("recv_any", "DOWN of the helper", in)) {
            expect("recv_any", "DOWN of the helper with this monitor", in->is_down() && in->from == helper && in->monitor() == *m2);
            expect("exit", "the helper's exit(7) is the DOWN's reason",
                   in->reason == shoal::DownReason::Exit && in->code == 7);
        }
    }
    expect_err("call", "a process that exited is NO_PROCESS", shoal::call(helper, "echo:x", wait), Errc::NoProcess);

    // names, key-value, locks: need a cluster
    const std::string name = "cpp-allimports-" + std::to_string(me.raw());
    auto reg = shoal::register_name(name);
    if (reg.is(Errc::NoNode)) {
        std::printf("standalone: no cluster here (shoal run), so names, key-value and locks must answer NO_NODE\n");
        ok("register", "NO_NODE off a cluster");
        standalone_checks(name);
    } else {
        if (expect_ok("register", "a fresh name", reg)) ok("register", "a fresh name");
        cluster_checks(me, helper2, name);
    }

    // End the second helper and wait for it, so nothing is left running.
    if (auto m3 = shoal::monitor(helper2); expect_ok("monitor", "the second helper", m3)) {
        if (auto r = shoal::send(helper2, "exit 0"); !r) fail("send", "exit 0 to the second helper", describe(r.code()));
        if (auto in = shoal::recv_any(wait); expect_ok("recv_any", "DOWN of the second helper", in))
            expect("exit", "the second helper's exit(0) is its DOWN's reason",
                   in->is_down() && in->from == helper2 && in->monitor() == *m3 &&
                       in->reason == shoal::DownReason::Exit && in->code == 0);
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 2 && std::strcmp(argv[1], "helper") == 0) helper();
    if (argc > 2) {
        std::fprintf(stderr, "usage: cpp_allimports [<self-ref>] | helper\n");
        shoal::exit(2);
    }
    run(argc == 2 ? argv[1] : argc == 1 ? argv[0] : "");
    if (failures == 0) {
        std::printf("all imports ok (%u checks)\n", checks);
        shoal::exit(0);
    }
    std::printf("allimports: %u of %u checks failed\n", failures, checks);
    shoal::exit(1);
}
