// cpp_pingpong: the ping_pong protocol (guests/ping_pong, Rust) in C++17,
// built against sdk/cpp/shoal.hpp, so that either side can be Rust and the
// other C++.
//
// Modes (first argument):
//
// - `pong`: loops on recv (no timeout). A message equal to `stop` ends the
//   process with code 0 (through shoal::exit); any other message is sent
//   back unchanged to its sender.
// - `ping <module-ref> <N> [<target>]`: spawns <module-ref> with the argument
//   `pong` (with <target>: through spawn_on), then for i in 0..N sends the
//   decimal text of i and waits for the reply, which must be the same bytes
//   from the same pid (otherwise prints `MISMATCH at <i>` and exits 1). Then
//   sends `stop`, prints `ping-pong done <N> round trips` and exits 0.
//
// Bad arguments print a usage line to stderr and exit 2; a Shoal error prints
// `cpp_pingpong: <what>: <error>` to stderr and exits 1.
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "shoal.hpp"

namespace {

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: cpp_pingpong pong | ping <module-ref> <N> [<target>]\n");
    shoal::exit(2);
}

[[noreturn]] void die(const char *what, shoal::Errc e) {
    std::fprintf(stderr, "cpp_pingpong: %s: %s\n", what, shoal::to_string(e));
    shoal::exit(1);
}

[[noreturn]] void pong() {
    for (;;) {
        auto msg = shoal::recv();
        if (!msg) die("recv", msg.error());
        if (msg->data == "stop") shoal::exit(0);
        if (auto r = shoal::send_blocking(msg->sender, msg->data); !r) {
            // The peer may be gone; keep serving others.
            std::fprintf(stderr, "cpp_pingpong: pong reply to %" PRIu64 ": %s\n", msg->sender.raw(),
                         shoal::to_string(r.error()));
        }
    }
}

void ping(const char *module, uint64_t n, const char *target) {
    auto peer = target ? shoal::spawn_on(target, module, {"pong"}) : shoal::spawn(module, {"pong"});
    if (!peer) die(target ? "spawn_on" : "spawn", peer.error());
    for (uint64_t i = 0; i < n; i++) {
        std::string payload = std::to_string(i);
        if (auto r = shoal::send_blocking(*peer, payload); !r) die("send", r.error());
        auto reply = shoal::recv();
        if (!reply) die("recv", reply.error());
        if (reply->sender != *peer || reply->data != payload) {
            std::printf("MISMATCH at %" PRIu64 "\n", i);
            shoal::exit(1);
        }
    }
    if (auto r = shoal::send_blocking(*peer, "stop"); !r) die("send stop", r.error());
    std::printf("ping-pong done %" PRIu64 " round trips\n", n);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 2 && std::strcmp(argv[1], "pong") == 0) pong();
    if ((argc == 4 || argc == 5) && std::strcmp(argv[1], "ping") == 0) {
        char *end = nullptr;
        errno = 0;
        unsigned long long n = std::strtoull(argv[3], &end, 10);
        if (errno != 0 || end == argv[3] || *end != '\0' || argv[3][0] == '-') {
            std::fprintf(stderr, "cpp_pingpong: not a number: %s\n", argv[3]);
            usage();
        }
        ping(argv[2], n, argc == 5 ? argv[4] : nullptr);
        shoal::exit(0);
    }
    usage();
}
