/*
 * c_pong: a pong server in C, built with clang against sdk/include/shoal.h.
 *
 *     clang --target=wasm32-wasi -O2 -I sdk/include -o c_pong.wasm guests/c/c_pong.c
 *
 * Prints "c_pong ready pid=<pid>", then loops receiving (no timeout) into a
 * 64 KiB buffer:
 *   - "stop": prints "c_pong done <n> messages" (n = messages answered, not
 *     counting "stop") and exits 0;
 *   - anything else: replies to the sender with "c:" followed by the payload.
 * A message larger than 64 KiB is received into a heap buffer of the size
 * the host reports (SHOAL_EBUFFER_TOO_SMALL keeps it queued). A full mailbox
 * on reply is retried with shoal_yield_now, then short sleeps, a bounded
 * number of times. Errors go to stderr; a failing recv exits 1.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal.h"

#define BUF_SIZE (64 * 1024)
#define PREFIX "c:"
#define PREFIX_LEN 2
#define SEND_RETRIES 1000

static unsigned char buf[BUF_SIZE];
static unsigned char reply[PREFIX_LEN + BUF_SIZE];

/* shoal_send, retrying while the receiver's mailbox is full. */
static int32_t send_retrying(shoal_pid_t pid, const void *data, int32_t len) {
    for (int attempt = 0;; attempt++) {
        int32_t rc = shoal_send(pid, data, len);
        if (rc != SHOAL_EMAILBOX_FULL || attempt >= SEND_RETRIES) {
            return rc;
        }
        if (attempt < 16) {
            shoal_yield_now();
        } else {
            shoal_sleep_ms(attempt < 20 ? 1 << (attempt - 16) : 10);
        }
    }
}

/* Sends "c:" + payload to `to`. */
static void answer(shoal_pid_t to, const unsigned char *payload, uint32_t len) {
    unsigned char *out = reply;
    if (len > BUF_SIZE) {
        out = malloc((size_t)len + PREFIX_LEN);
        if (out == NULL) {
            fprintf(stderr, "c_pong: out of memory for a %" PRIu32 "-byte reply\n", len);
            return;
        }
    }
    memcpy(out, PREFIX, PREFIX_LEN);
    memcpy(out + PREFIX_LEN, payload, len);
    int32_t rc = send_retrying(to, out, (int32_t)(len + PREFIX_LEN));
    if (rc != SHOAL_OK) {
        fprintf(stderr, "c_pong: reply to %" PRIu64 " failed: %" PRId32 "\n", to, rc);
    }
    if (out != reply) {
        free(out);
    }
}

int main(void) {
    printf("c_pong ready pid=%" PRIu64 "\n", shoal_self_pid());
    fflush(stdout);

    unsigned long answered = 0;
    for (;;) {
        shoal_recv_info_t info;
        int32_t rc = shoal_recv(buf, BUF_SIZE, SHOAL_WAIT_FOREVER, &info);
        const unsigned char *payload = buf;
        unsigned char *big = NULL;
        if (rc == SHOAL_EBUFFER_TOO_SMALL) {
            /* Still queued: take it into a buffer of the size needed. */
            big = malloc(info.length);
            if (big == NULL) {
                fprintf(stderr, "c_pong: out of memory for a %" PRIu32 "-byte message\n", info.length);
                return 1;
            }
            rc = shoal_recv(big, (int32_t)info.length, SHOAL_WAIT_FOREVER, &info);
            payload = big;
        }
        if (rc < 0) {
            fprintf(stderr, "c_pong: recv failed: %" PRId32 "\n", rc);
            return 1;
        }
        uint32_t len = (uint32_t)rc;
        if (len == 4 && memcmp(payload, "stop", 4) == 0) {
            printf("c_pong done %lu messages\n", answered);
            fflush(stdout);
            return 0;
        }
        answer(info.sender_pid, payload, len);
        answered++;
        free(big);
    }
}
