/* Signed letters: .cvmfspublished and .cvmfswhitelist parsing (with the digest both as sent and
 * fixed up, so the fuzzer gets past the SHA-1 check to the line parsers), the fingerprint lookup,
 * and the rollback state file "revision-<fqrn>". */
#include "fuzz_common.h"

static void parse_all(const uint8_t *d, size_t n) {
    char err[600];
    struct manifest m;
    if (parse_manifest(d, n, &m, err, sizeof err) == 0) {
        if (!m.C[0] || !is_hex40(m.C) || m.S < 0 || !valid_fqrn(m.N)) abort();
        char name[256];
        if (seen_name(m.N, name, sizeof name) < 0 || strchr(name, '/')) abort();
    }
    struct whitelist w;
    if (parse_whitelist(d, n, &w, err, sizeof err) == 0) {
        whitelist_lists(&w, "AB:CD:EF");
        whitelist_lists(&w, "");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parse_all(data, size);
    /* the same letter with the digest line replaced by the payload's real SHA-1 */
    size_t plen, siglen;
    char digest[64];
    const unsigned char *sig;
    if (split_letter(data, size, &plen, digest, &sig, &siglen) == 0) {
        char hex[41];
        sha1_hex(data, plen, hex);
        size_t n = plen + 3 + 40 + 1 + siglen;
        unsigned char *fixed = malloc(n);
        memcpy(fixed, data, plen);
        memcpy(fixed + plen, "--\n", 3);
        memcpy(fixed + plen + 3, hex, 40);
        fixed[plen + 43] = '\n';
        memcpy(fixed + plen + 44, sig, siglen);
        parse_all(fixed, n);
        free(fixed);
    }
    struct seen s;
    if (parse_seen((const char *)data, size, &s) == 0 && (s.revision < 0 || !is_hex40(s.root))) abort();
    return 0;
}
