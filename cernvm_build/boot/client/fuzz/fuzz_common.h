/* Shared by the libFuzzer harnesses: cvmfs-mini.c itself, without main(). A harness calls the
 * client's own parsers; die() exits, which libFuzzer reports as a failure (parsers must not die). */
#define CVMFS_MINI_FUZZ 1
#include "../cvmfs-mini.c"

/* Take N bytes from (*P, *LEFT), zero-padded when the input runs out. */
static void take(const uint8_t **p, size_t *left, void *out, size_t n) {
    size_t k = *left < n ? *left : n;
    memcpy(out, *p, k);
    memset((char *)out + k, 0, n - k);
    *p += k;
    *left -= k;
}
static uint64_t take_u64(const uint8_t **p, size_t *left) {
    uint64_t v;
    take(p, left, &v, sizeof v);
    return v;
}
static unsigned take_u8(const uint8_t **p, size_t *left) {
    uint8_t v;
    take(p, left, &v, 1);
    return v;
}
