/* HTTP response parsing: status line, headers, Content-Length, chunked decoding, into each kind of
 * sink (bounded memory, inflate to a file, raw to a file, hash-checked). Input: 1 byte read size
 * (how many bytes each recv() returns), 1 byte sink kind, then the bytes the "server" sends. */
#include "fuzz_common.h"
#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct rd r;
    static int fd = -1;
    if (fd < 0) fd = memfd_create("fuzz-http", MFD_CLOEXEC);
    if (size < 2) return 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    r.step = data[0] ? data[0] : 4096;
    int kind = data[1] % 4;
    r.mem = data + 2;
    r.memlen = size - 2;
    struct sink s;
    /* kind 0: a signed letter in memory; 1: a zlib object; 2: a raw object; 3: zlib with a SHA-1 */
    sink_init(&s, "object", kind ? fd : -1, kind == 2, kind == 3 ? "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78" : NULL,
              kind ? zlib_bound(1 << 16) : MAX_MANIFEST_BYTES, kind ? 1 << 16 : MAX_MANIFEST_BYTES);
    char err[600];
    for (int i = 0; i < 4; i++) { /* keep-alive: several responses on one connection */
        int keep = 0;
        if (sink_reset(&s) < 0) break;
        int st = http_read_response(&r, &s, &keep, err, sizeof err);
        if (st == 200 && s.out_len > s.out_limit) abort(); /* a ceiling was not enforced */
        if (st == 200 && s.in_len > s.in_limit) abort();
        if (st != 200 || !keep) break;
    }
    sink_free(&s);
    return 0;
}
