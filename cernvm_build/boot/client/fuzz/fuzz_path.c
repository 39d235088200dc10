/* Paths: server URLs, the nested-catalog lookup (which catalog holds a path), FUSE path to
 * repository path and its MD5 pair, readlink truncation, the cache state file name.
 * Input: NUL-separated fields: URL, nested mount points (newline-separated), path, symlink, fqrn. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    char *field[5] = {"", "", "", "", ""};
    char *s = buf;
    for (int i = 0; i < 5; i++) {
        field[i] = s;
        char *z = memchr(s, 0, (size_t)(buf + size - s));
        if (!z) break;
        s = z + 1;
        if (s > buf + size) break;
    }
    struct server srv;
    char err[700];
    if (parse_server(&srv, field[0], err, sizeof err) == 0) {
        if (!srv.host[0] || strlen(srv.port) == 0 || (srv.path[0] && srv.path[0] != '/')) abort();
        size_t pl = strlen(srv.path);
        if (pl && srv.path[pl - 1] == '/') abort();
        free(srv.url);
        free(srv.path);
    }
    struct nested_ref refs[32];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(field[1], "\n", &save); t && n < 32; t = strtok_r(NULL, "\n", &save)) {
        memset(&refs[n], 0, sizeof refs[n]);
        refs[n].path = t;
        refs[n].len = strlen(t);
        n++;
    }
    const char *path = field[2][0] ? field[2] : "/";
    const char *rp = repo_path(path);
    struct nested_ref *hit = nested_find(refs, n, rp);
    if (hit) {
        if (strncmp(rp, hit->path, hit->len) || (rp[hit->len] && rp[hit->len] != '/') || !hit->len) abort();
    }
    int64_t a, b;
    md5_pair(rp, &a, &b);
    char out[64];
    for (size_t cap = 0; cap <= sizeof out; cap += 7) {
        symlink_copy(out, cap, field[3]);
        if (cap && strlen(out) >= cap) abort();
    }
    char name[256];
    if (seen_name(field[4], name, sizeof name) == 0) {
        if (strchr(name, '/') || name[0] == '.' || strstr(name, "..") == name) abort();
    }
    free(buf);
    return 0;
}
