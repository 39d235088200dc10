/* cvmfs-mini: a small read-only CernVM-FS client (FUSE), for boot initramfs images.
 *
 * Trust chain (checked before anything is mounted):
 *   .cvmfswhitelist  signed (raw RSA PKCS#1 type 1 over the hex SHA-1) by a master public key,
 *                    names the repository, not expired, lists the certificate's SHA-1 fingerprint;
 *   certificate      data/xx/...X object, SHA-1 checked, zlib, PEM X.509;
 *   .cvmfspublished  PKCS#1 v1.5 / SHA-1 signature over the hex SHA-1 of the payload by the
 *                    certificate's key; names the root catalog (C) and the history database (H).
 * After that every object (catalog, file, chunk) is fetched on demand over HTTP from one of the
 * configured servers and accepted only when the SHA-1 of the downloaded bytes equals its name; a
 * mismatch is an EIO, never wrong data. Objects are kept decompressed in an LRU disk cache.
 *
 * The daemon keeps working after the initramfs switch_root: the cache directory is its working
 * directory (all cache paths are relative), server addresses are resolved at start-up and all
 * signature checks happen before the mount, so nothing is looked up on the (deleted) initramfs.
 *
 * Build: cc -O2 -o cvmfs-mini cvmfs-mini.c $(pkg-config --cflags --libs fuse3 sqlite3 zlib libcrypto)
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <zlib.h>

#define PROG "cvmfs-mini"
#define MAX_SERVERS 16
#define MAX_KEYS 8
#define MAX_PROXIES 32
#define MAX_PROXY_GROUPS 16
#define MAX_PROXY_SPEC 4096

/* catalog flags */
#define F_DIR 1
#define F_NESTED_MP 2
#define F_FILE 4
#define F_LINK 8
#define F_SPECIAL 16
#define F_NESTED_ROOT 32
#define F_CHUNK 64
#define F_EXTERNAL 128
#define F_HASH_MASK (7 << 8)
#define F_COMP_SHIFT 11
#define F_COMP_MASK (7 << 11)
#define F_HIDDEN 0x8000

/* Ceilings on what a server may send (a lying server must not make the client grow or fill the disk).
 * Data objects (files, chunks) get their own ceiling from the size the catalog records. */
#define MAX_MANIFEST_BYTES (64u << 10)   /* .cvmfspublished: ~12 short lines and a 256..512-byte signature
                                            (cvmfs2 itself reads at most 4 KiB of a cached manifest) */
#define MAX_WHITELIST_BYTES (256u << 10) /* .cvmfswhitelist: 3 header lines, one 60-byte line per certificate
                                            fingerprint, a signature: 256 KiB is thousands of certificates */
#define MAX_CERT_BYTES (64u << 10)       /* certificate: one PEM X.509 (~1.2 KiB for RSA-2048), before and
                                            after inflating */
#define MAX_CATALOG_BYTES (1ULL << 30)   /* catalog SQLite file when neither the manifest (B) nor the parent
                                            catalog (nested_catalogs.size) records its size: real catalogs
                                            stay well under 100 MiB (publishers split at ~200k entries) */
#define MAX_HISTORY_BYTES (256ULL << 20) /* tag database */
#define MAX_HEADER_LINE 8192             /* one HTTP header line / chunk-size line */
#define MAX_HEADER_LINES 128             /* header (and trailer) lines per response */

/* zlib's worst case for a stream that inflates to N bytes: stored (uncompressed) deflate blocks cost
 * 5 bytes per block, plus the 2-byte header and 4-byte Adler-32. This is deflateBound()'s conservative
 * bound (valid for any compression level, window and memLevel), so no honest publisher exceeds it. */
static uint64_t zlib_bound(uint64_t n) { return n + ((n + 7) >> 3) + ((n + 63) >> 6) + 5 + 6; }

/* ------------------------------------------------------------------------------------ options */
static struct {
    char *servers[MAX_SERVERS];
    int nservers;
    char *proxy; /* CVMFS_HTTP_PROXY syntax; NULL: no proxy (DIRECT) */
    char *pubkeys[MAX_KEYS];
    int npubkeys;
    char *fqrn;
    char *tag;
    char *root_hash;
    char *cache_dir;
    long cache_mb;
    int foreground;
    int debug;
    int retries;
    int timeout;         /* idle: seconds without a byte from the server */
    int connect_timeout; /* seconds to establish a TCP connection */
    int deadline;        /* seconds for a whole request (connect, headers, body) */
    long long min_revision;
    int root_daemon;
    char *root_hash_file;
    char *log_file;
    int allow_expired;
    int prefetch; /* workers fetching the snapshot's boot working-set list; 0: no prefetch */
} opt = {.cache_mb = 1024, .retries = 3, .timeout = 20, .connect_timeout = 5, .deadline = 120, .prefetch = 4};

/* Set once the file system is mounted: from then on nothing may exit the process (every failure is
 * an EIO and one log line); die() is for start-up only. */
static int mount_up;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (mount_up) fprintf(stderr, PROG ": internal error after mounting (a bug): ");
    else fprintf(stderr, PROG ": error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

#define DEBUG(...) do { if (opt.debug) logmsg(__VA_ARGS__); } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}
static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory");
    return p;
}
static char *xstrdup(const char *s) {
    char *p = strdup(s);
    if (!p) die("out of memory");
    return p;
}

/* ----------------------------------------------------------------------------------- buffers */
struct buf {
    unsigned char *data;
    size_t len, cap;
};
static void buf_add(struct buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

/* ------------------------------------------------------------------------------------ hashing */
static void sha1_hex(const void *data, size_t len, char out[41]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", md[i]);
    out[40] = 0;
}

static void md5_pair(const char *path, int64_t *a, int64_t *b) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(path, strlen(path), md, &n, EVP_md5(), NULL);
    memcpy(a, md, 8); /* little-endian x86: bytes 0..7 as int64 */
    memcpy(b, md + 8, 8);
}

static int is_hex40(const char *s) {
    if (strlen(s) != 40) return 0;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------- sinks */
/* Where a response body goes, byte by byte as it arrives: SHA-1 over the received bytes, then either
 * kept in memory (signed letters, bounded) or inflated (unless RAW) straight into a file. Memory per
 * request is constant: a receive buffer, the zlib state and one output buffer, whatever is sent. */
struct sink {
    const char *what;     /* for messages: the object's path */
    uint64_t in_limit;    /* ceiling on received bytes */
    uint64_t out_limit;   /* ceiling on bytes written to FD (after inflating) */
    int fd;               /* -1: keep the bytes in MEM instead */
    int raw;              /* store as received, no inflating */
    const char *expect;   /* hex SHA-1 the received bytes must have, or NULL */
    /* state of one attempt */
    uint64_t in_len, out_len;
    EVP_MD_CTX *md;
    z_stream z;
    int zinit, zend;
    unsigned char *mem;
    size_t memcap;
    int bad; /* the content is wrong (hash, zlib): a proxy may hold a corrupted copy */
    char err[400];
};

static void sink_init(struct sink *s, const char *what, int fd, int raw, const char *expect, uint64_t in_limit,
                      uint64_t out_limit) {
    memset(s, 0, sizeof *s);
    s->what = what;
    s->fd = fd;
    s->raw = raw;
    s->expect = expect;
    s->in_limit = in_limit;
    s->out_limit = out_limit;
}

static void sink_free(struct sink *s) {
    if (s->zinit) inflateEnd(&s->z);
    s->zinit = 0;
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
    free(s->mem);
    s->mem = NULL;
    s->memcap = 0;
}

/* Start over (a new attempt, maybe on another server). 0 ok, -1 with s->err. */
static int sink_reset(struct sink *s) {
    s->in_len = s->out_len = 0;
    s->zend = 0;
    s->bad = 0;
    s->err[0] = 0;
    if (s->expect) {
        if (!s->md && !(s->md = EVP_MD_CTX_new())) goto nomem;
        if (EVP_DigestInit_ex(s->md, EVP_sha1(), NULL) != 1) goto nomem;
    }
    if (s->fd >= 0) {
        if (ftruncate(s->fd, 0) < 0 || lseek(s->fd, 0, SEEK_SET) < 0) {
            snprintf(s->err, sizeof s->err, "cache: cannot reset a temporary file: %s", strerror(errno));
            return -1;
        }
        if (!s->raw) {
            int zr = s->zinit ? inflateReset(&s->z) : inflateInit(&s->z);
            if (zr != Z_OK) goto nomem;
            s->zinit = 1;
        }
    }
    return 0;
nomem:
    snprintf(s->err, sizeof s->err, "out of memory");
    return -1;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sink_out(struct sink *s, const unsigned char *p, size_t n) {
    if (n > s->out_limit - s->out_len) {
        snprintf(s->err, sizeof s->err, "%s inflates to more than the %llu bytes expected", s->what,
                 (unsigned long long)s->out_limit);
        return -1;
    }
    if (write_all(s->fd, p, n) < 0) {
        snprintf(s->err, sizeof s->err, "cache: write failed: %s", strerror(errno));
        return -1;
    }
    s->out_len += n;
    return 0;
}

/* Take N more received bytes. 0 ok, -1 with s->err (the response is refused). */
static int sink_write(struct sink *s, const unsigned char *p, size_t n) {
    if (n > s->in_limit - s->in_len) {
        snprintf(s->err, sizeof s->err, "%s is larger than the %llu bytes allowed", s->what,
                 (unsigned long long)s->in_limit);
        s->bad = 1; /* a copy that cannot be the object (an uncompressed one is bounded by its exact size) */
        return -1;
    }
    s->in_len += n;
    if (s->md && EVP_DigestUpdate(s->md, p, n) != 1) {
        snprintf(s->err, sizeof s->err, "SHA-1 failed");
        return -1;
    }
    if (s->fd < 0) {
        if (s->in_len + 1 > s->memcap) {
            size_t cap = s->memcap ? s->memcap : 4096;
            while (cap < s->in_len + 1) cap *= 2;
            if (s->in_limit < SIZE_MAX && cap > s->in_limit + 1) cap = (size_t)s->in_limit + 1;
            unsigned char *m = realloc(s->mem, cap);
            if (!m) {
                snprintf(s->err, sizeof s->err, "out of memory");
                return -1;
            }
            s->mem = m;
            s->memcap = cap;
        }
        memcpy(s->mem + s->in_len - n, p, n);
        s->mem[s->in_len] = 0;
        return 0;
    }
    if (s->raw) return sink_out(s, p, n);
    if (s->zend) {
        if (n) {
            snprintf(s->err, sizeof s->err, "%s has data after the end of its zlib stream", s->what);
            s->bad = 1;
            return -1;
        }
        return 0;
    }
    unsigned char outb[32768];
    s->z.next_in = (unsigned char *)p;
    s->z.avail_in = (uInt)n; /* N <= the receive buffer, 64 KiB */
    do {
        s->z.next_out = outb;
        s->z.avail_out = sizeof outb;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            snprintf(s->err, sizeof s->err, "%s is not a valid zlib stream", s->what);
            s->bad = 1;
            return -1;
        }
        if (sink_out(s, outb, sizeof outb - s->z.avail_out) < 0) return -1;
        if (zr == Z_STREAM_END) {
            s->zend = 1;
            break;
        }
        if (zr == Z_BUF_ERROR) break; /* no progress possible: needs more input */
    } while (s->z.avail_in > 0 || s->z.avail_out == 0);
    if (s->zend && s->z.avail_in) {
        snprintf(s->err, sizeof s->err, "%s has data after the end of its zlib stream", s->what);
        s->bad = 1;
        return -1;
    }
    return 0;
}

/* The whole body arrived: complete stream, right hash. 0 ok, -1 with s->err. */
static int sink_finish(struct sink *s) {
    if (s->fd >= 0 && !s->raw && !s->zend) {
        snprintf(s->err, sizeof s->err, "%s is a truncated zlib stream", s->what);
        s->bad = 1;
        return -1;
    }
    if (s->md) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        char got[41];
        if (EVP_DigestFinal_ex(s->md, md, &n) != 1 || n != 20) {
            snprintf(s->err, sizeof s->err, "SHA-1 failed");
            return -1;
        }
        for (unsigned i = 0; i < n; i++) sprintf(got + 2 * i, "%02x", md[i]);
        if (strcmp(got, s->expect) != 0) {
            snprintf(s->err, sizeof s->err, "object %s is corrupted: its SHA-1 is %s, expected %s; refused", s->what,
                     got, s->expect);
            s->bad = 1;
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- HTTP */
struct server {
    char *url;
    char host[256];
    char port[8];
    char *path; /* without trailing slash, "" for the root */
    struct sockaddr_storage addr;
    socklen_t alen;
    int resolved;
    int fd;
    int direct; /* a proxy entry "DIRECT": no proxy, connect to the server itself */
};
static struct server servers[MAX_SERVERS];
static int preferred_server;
static uint64_t stat_rx_bytes, stat_objects;

/* "http://host[:port][/path]" -> S. 0 ok, -1 with ERR. */
static int parse_server(struct server *s, const char *url, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "server URL %s: only http:// is supported", url);
        return -1;
    }
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= sizeof s->host) {
        snprintf(err, errlen, "server URL %s has no host (or a too long one)", url);
        return -1;
    }
    memcpy(s->host, h, hl);
    s->host[hl] = 0;
    strcpy(s->port, "80");
    char *colon = strrchr(s->host, ':');
    if (colon && !strchr(colon, ']')) {
        const char *p = colon + 1;
        size_t pl = strlen(p);
        if (pl == 0 || pl >= sizeof s->port || strspn(p, "0123456789") != pl || atoi(p) < 1 || atoi(p) > 65535) {
            snprintf(err, errlen, "server URL %s has a bad port", url);
            return -1;
        }
        memcpy(s->port, p, pl + 1);
        *colon = 0;
    }
    if (s->host[0] == '[') { /* [v6] */
        memmove(s->host, s->host + 1, strlen(s->host));
        char *e = strchr(s->host, ']');
        if (e) *e = 0;
    }
    if (!s->host[0] || strpbrk(s->host, " \t\r\n/?#@")) {
        snprintf(err, errlen, "server URL %s has a bad host", url);
        return -1;
    }
    const char *path = slash ? slash : "";
    if (strpbrk(path, " \t\r\n") || strlen(path) > 1024) {
        snprintf(err, errlen, "server URL %s has a bad path", url);
        return -1;
    }
    s->url = strdup(url);
    s->path = strdup(path);
    if (!s->url || !s->path) {
        free(s->url);
        free(s->path);
        s->url = s->path = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t pl = strlen(s->path);
    while (pl && s->path[pl - 1] == '/') s->path[--pl] = 0;
    return 0;
}

static int resolve_server(struct server *s, char *err, size_t errlen) {
    if (s->resolved) return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(s->host, s->port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve %s: %s", s->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
    s->alen = res->ai_addrlen;
    s->resolved = 1;
    freeaddrinfo(res);
    return 0;
}

/* ------------------------------------------------------------------------------------ proxies */
/* A proxy specification in the syntax of the reference client's CVMFS_HTTP_PROXY:
 *   "http://p1:3128|http://p2:3128;http://backup:3128;DIRECT"
 * ';' separates groups, tried in order; '|' separates the members of one group, which share the load
 * (each client starts on a member picked from a hash of the machine, then rotates on failure).
 * "DIRECT" is a member like any other: no proxy, the server itself. A member without "http://" gets it;
 * a proxy URL has no path. Spaces around members are ignored; empty members are an error. */
struct proxy_spec {
    int ngroups, nproxies;
    int first[MAX_PROXY_GROUPS + 1]; /* group g: proxy[first[g]] .. proxy[first[g + 1] - 1] */
    struct server proxy[MAX_PROXIES];
};

static void proxy_spec_free(struct proxy_spec *ps) {
    for (int i = 0; i < ps->nproxies; i++) {
        free(ps->proxy[i].url);
        free(ps->proxy[i].path);
        if (ps->proxy[i].fd >= 0) close(ps->proxy[i].fd);
    }
    memset(ps, 0, sizeof *ps);
}

/* SPEC (LEN bytes, need not be NUL-terminated) -> PS. 0 ok, -1 with ERR (PS then empty). */
static int parse_proxy_spec(const char *spec, size_t len, struct proxy_spec *ps, char *err, size_t errlen) {
    memset(ps, 0, sizeof *ps);
    if (len > MAX_PROXY_SPEC) {
        snprintf(err, errlen, "proxy list longer than %d bytes", MAX_PROXY_SPEC);
        return -1;
    }
    if (memchr(spec, 0, len)) {
        snprintf(err, errlen, "proxy list contains a NUL byte");
        return -1;
    }
    size_t pos = 0;
    for (;;) { /* one member per turn */
        size_t end = pos;
        while (end < len && spec[end] != ';' && spec[end] != '|') end++;
        size_t a = pos, b = end;
        while (a < b && (spec[a] == ' ' || spec[a] == '\t')) a++;
        while (b > a && (spec[b - 1] == ' ' || spec[b - 1] == '\t')) b--;
        if (a == b) {
            snprintf(err, errlen, "proxy list has an empty entry (at byte %zu)", pos);
            goto fail;
        }
        if (ps->nproxies == MAX_PROXIES) {
            snprintf(err, errlen, "more than %d proxies", MAX_PROXIES);
            goto fail;
        }
        if (ps->ngroups == 0) ps->ngroups = 1; /* the first member opens the first group */
        struct server *p = &ps->proxy[ps->nproxies];
        char member[1100];
        size_t ml = b - a;
        if (ml == 6 && !memcmp(spec + a, "DIRECT", 6)) {
            memset(p, 0, sizeof *p);
            p->fd = -1;
            p->direct = 1;
            if (!(p->url = strdup("DIRECT")) || !(p->path = strdup(""))) {
                free(p->url);
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
        } else {
            int scheme = ml >= 7 && !memcmp(spec + a, "http://", 7);
            if (ml + (scheme ? 0 : 7) >= sizeof member) {
                snprintf(err, errlen, "proxy %.40s...: too long", spec + a);
                goto fail;
            }
            snprintf(member, sizeof member, "%s%.*s", scheme ? "" : "http://", (int)ml, spec + a);
            if (strstr(member + 7, "://")) {
                snprintf(err, errlen, "proxy %.200s: only http:// proxies are supported", member);
                goto fail;
            }
            if (parse_server(p, member, err, errlen) < 0) goto fail;
            if (p->path[0]) {
                snprintf(err, errlen, "proxy %.200s: a proxy URL has no path", member);
                free(p->url);
                free(p->path);
                goto fail;
            }
        }
        ps->nproxies++;
        ps->first[ps->ngroups] = ps->nproxies;
        if (end == len) break;
        if (spec[end] == ';') {
            if (ps->ngroups == MAX_PROXY_GROUPS) {
                snprintf(err, errlen, "more than %d proxy groups", MAX_PROXY_GROUPS);
                goto fail;
            }
            ps->ngroups++;
            ps->first[ps->ngroups] = ps->nproxies;
        }
        pos = end + 1;
    }
    return 0;
fail:
    proxy_spec_free(ps);
    return -1;
}

static int spec_has_direct(const struct proxy_spec *ps) {
    for (int i = 0; i < ps->nproxies; i++)
        if (ps->proxy[i].direct) return 1;
    return 0;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds to wait: the smaller of LIMIT_S seconds and what is left until DEADLINE; 0 = expired. */
static int wait_ms(int limit_s, int64_t deadline) {
    int64_t left = deadline - now_ms();
    int64_t lim = (int64_t)(limit_s > 0 ? limit_s : 1) * 1000;
    if (left <= 0) return 0;
    return (int)(left < lim ? left : lim);
}

static int tcp_connect(struct server *s, int64_t deadline, char *err, size_t errlen) {
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&s->addr, s->alen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "cannot connect to %s:%s: %s", s->host, s->port, strerror(errno));
        close(fd);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, wait_ms(opt.connect_timeout, deadline));
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        snprintf(err, errlen, "cannot connect to %s:%s: %s", s->host, s->port,
                 r == 0 ? "timed out" : strerror(soerr ? soerr : errno));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd; /* stays non-blocking: every wait is a poll() bounded by the idle timeout and the deadline */
}

/* buffered reader over the socket (or, for the fuzzers, over bytes in memory) */
struct rd {
    int fd;
    const unsigned char *mem; /* instead of FD: MEMLEN bytes, handed out STEP bytes at a time */
    size_t memlen, step;
    int64_t deadline;
    unsigned char buf[65536];
    size_t pos, len;
    int eof, timed_out;
};
static int rd_fill(struct rd *r) { /* 1 data, 0 eof, -1 error or timeout */
    if (r->pos < r->len) return 1;
    if (r->eof) return 0;
    if (r->mem) {
        size_t n = r->memlen < r->step ? r->memlen : r->step;
        if (n > sizeof r->buf) n = sizeof r->buf;
        if (!n) {
            r->eof = 1;
            return 0;
        }
        memcpy(r->buf, r->mem, n);
        r->mem += n;
        r->memlen -= n;
        r->pos = 0;
        r->len = n;
        return 1;
    }
    for (;;) {
        ssize_t n = recv(r->fd, r->buf, sizeof r->buf, 0);
        if (n > 0) {
            stat_rx_bytes += (uint64_t)n;
            r->pos = 0;
            r->len = (size_t)n;
            return 1;
        }
        if (n == 0) {
            r->eof = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        int ms = wait_ms(opt.timeout, r->deadline);
        int pr = ms > 0 ? poll(&p, 1, ms) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            r->timed_out = 1;
            return -1;
        }
    }
}
static int rd_line(struct rd *r, char *line, size_t cap) { /* 1 ok, 0 eof before any byte, -1 error */
    size_t n = 0;
    for (;;) {
        int f = rd_fill(r);
        if (f <= 0) return n ? -1 : f;
        unsigned char c = r->buf[r->pos++];
        if (c == '\n') {
            if (n && line[n - 1] == '\r') n--;
            line[n] = 0;
            return 1;
        }
        if (n + 1 >= cap) return -1;
        line[n++] = (char)(c ? c : ' '); /* a NUL must not cut the line short unseen */
    }
}
/* Pass N body bytes to the sink. 0 ok, -1 transfer error, -2 sink refused (its err says why). */
static int rd_body(struct rd *r, struct sink *out, uint64_t n) {
    while (n) {
        int f = rd_fill(r);
        if (f <= 0) return -1;
        size_t k = r->len - r->pos;
        if (k > n) k = (size_t)n;
        if (sink_write(out, r->buf + r->pos, k) < 0) return -2;
        r->pos += k;
        n -= k;
    }
    return 0;
}

/* A decimal Content-Length: digits only, no sign, no overflow. */
static int parse_content_length(const char *v, uint64_t *out) {
    while (*v == ' ' || *v == '\t') v++;
    if (!(*v >= '0' && *v <= '9')) return -1;
    uint64_t x = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        if (x > (UINT64_MAX - 9) / 10) return -1;
        x = x * 10 + (uint64_t)(*v - '0');
    }
    while (*v == ' ' || *v == '\t') v++;
    return *v ? -1 : (*out = x, 0);
}

/* A chunk-size line: hex digits, optionally ";extensions". */
static int parse_chunk_size(const char *v, uint64_t *out) {
    uint64_t x = 0;
    int digits = 0;
    for (;; v++) {
        int d;
        if (*v >= '0' && *v <= '9') d = *v - '0';
        else if (*v >= 'a' && *v <= 'f') d = *v - 'a' + 10;
        else if (*v >= 'A' && *v <= 'F') d = *v - 'A' + 10;
        else break;
        if (x >> 60) return -1; /* would overflow */
        x = x * 16 + (uint64_t)d;
        digits++;
    }
    while (*v == ' ' || *v == '\t') v++;
    if (!digits || (*v && *v != ';')) return -1;
    *out = x;
    return 0;
}

/* Read one response from R. For status 200 the body goes through SINK (sink_finish checked) and
 * *KEEP says whether the connection may carry the next request; for any other status the body is
 * not read (*KEEP = 0). Returns the status, or -1 with ERR set (R->timed_out tells a timeout). */
static int http_read_response(struct rd *r, struct sink *sink, int *keep, char *err, size_t errlen) {
    char line[MAX_HEADER_LINE];
    *keep = 0;
    int lr = rd_line(r, line, sizeof line);
    if (lr <= 0) {
        snprintf(err, errlen, lr == 0 ? "connection closed" : r->timed_out ? "timed out" : "connection error");
        return -1;
    }
    if (strncmp(line, "HTTP/1.", 7) != 0 || !(line[7] == '0' || line[7] == '1') || line[8] != ' ' ||
        !(line[9] >= '1' && line[9] <= '5') || !(line[10] >= '0' && line[10] <= '9') ||
        !(line[11] >= '0' && line[11] <= '9') || (line[12] && line[12] != ' ')) {
        snprintf(err, errlen, "malformed status line");
        return -1;
    }
    int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    int keepalive = line[7] == '1';
    uint64_t clen = 0;
    int have_clen = 0, chunked = 0, nlines = 0;
    for (;;) {
        lr = rd_line(r, line, sizeof line);
        if (lr <= 0) {
            snprintf(err, errlen, r->timed_out ? "timed out in the headers" : "truncated or oversized headers");
            return -1;
        }
        if (!line[0]) break;
        if (++nlines > MAX_HEADER_LINES) {
            snprintf(err, errlen, "more than %d header lines", MAX_HEADER_LINES);
            return -1;
        }
        if (!strncasecmp(line, "Content-Length:", 15)) {
            uint64_t v;
            if (parse_content_length(line + 15, &v) < 0 || (have_clen && v != clen)) {
                snprintf(err, errlen, "malformed Content-Length");
                return -1;
            }
            clen = v;
            have_clen = 1;
        } else if (!strncasecmp(line, "Transfer-Encoding:", 18)) {
            if (strcasestr(line + 18, "chunked")) chunked = 1;
            else if (!strcasestr(line + 18, "identity")) {
                snprintf(err, errlen, "unsupported Transfer-Encoding");
                return -1;
            }
        } else if (!strncasecmp(line, "Connection:", 11)) {
            if (strcasestr(line, "close")) keepalive = 0;
            else if (strcasestr(line, "keep-alive")) keepalive = 1;
        } else if (!strncasecmp(line, "Content-Encoding:", 17) && !strcasestr(line, "identity")) {
            snprintf(err, errlen, "server applied a content encoding");
            return -1;
        }
    }
    if (status != 200) {
        snprintf(err, errlen, "HTTP %d%s", status,
                 status >= 300 && status < 400 ? " (redirects are not followed)" : "");
        return status;
    }
    int br;
    if (chunked) {
        for (;;) {
            uint64_t cl;
            if (rd_line(r, line, sizeof line) <= 0) goto trunc;
            if (parse_chunk_size(line, &cl) < 0) {
                snprintf(err, errlen, "malformed chunk size");
                return -1;
            }
            if (cl == 0) {
                for (int i = 0;; i++) { /* trailer */
                    if (i > MAX_HEADER_LINES || rd_line(r, line, sizeof line) <= 0) goto trunc;
                    if (!line[0]) break;
                }
                break;
            }
            if ((br = rd_body(r, sink, cl)) < 0) goto body;
            if (rd_line(r, line, sizeof line) <= 0) goto trunc;
            if (line[0]) {
                snprintf(err, errlen, "malformed chunked encoding");
                return -1;
            }
        }
    } else if (have_clen) {
        if (clen > sink->in_limit) {
            snprintf(err, errlen, "announces %llu bytes, more than the %llu allowed for %s",
                     (unsigned long long)clen, (unsigned long long)sink->in_limit, sink->what);
            sink->bad = 1; /* bad data, as a wrong hash is: a proxy's copy is asked for again with no-cache */
            return -1;
        }
        if ((br = rd_body(r, sink, clen)) < 0) goto body;
    } else {
        keepalive = 0; /* the body ends when the connection does */
        for (;;) {
            int f = rd_fill(r);
            if (f < 0) goto trunc;
            if (f == 0) break;
            if (sink_write(sink, r->buf + r->pos, r->len - r->pos) < 0) {
                br = -2;
                goto body;
            }
            r->pos = r->len;
        }
    }
    if (sink_finish(sink) < 0) {
        snprintf(err, errlen, "%s", sink->err);
        return -1;
    }
    *keep = keepalive;
    return 200;
body:
    if (br == -2) {
        snprintf(err, errlen, "%s", sink->err);
        return -1;
    }
trunc:
    snprintf(err, errlen, r->timed_out ? "timed out in the body" : "transfer interrupted");
    return -1;
}

static void server_close(struct server *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
}

/* Send all of REQ on a non-blocking socket before DEADLINE. */
static int send_all(int fd, const char *req, size_t n, int64_t deadline) {
    while (n) {
        ssize_t w = send(fd, req, n, MSG_NOSIGNAL);
        if (w > 0) {
            req += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int ms = wait_ms(opt.timeout, deadline);
            if (ms > 0 && poll(&p, 1, ms) > 0) continue;
        }
        return -1;
    }
    return 0;
}

static struct rd *the_rd; /* one receive buffer: requests are made one at a time (single-threaded loop) */

/* How one attempt failed (decides which failover it triggers, see http_get). */
enum fail_kind { FK_NONE, FK_CONNECT, FK_TRANSFER, FK_HTTP, FK_BAD_DATA };

/* "host:port" for a Host header or an absolute URI (IPv6 literals in brackets). */
static void host_port(const struct server *s, char *out, size_t cap) {
    snprintf(out, cap, strchr(s->host, ':') ? "[%s]:%s" : "%s:%s", s->host, s->port);
}

/* One GET of REL from server S, through proxy VIA (NULL or DIRECT: to S itself), within the
 * per-request deadline; NOCACHE asks caches on the way to fetch anew. Returns the HTTP status (200:
 * the body went through SINK, complete and verified), or -1 with ERR set; *KIND says what failed. */
static int http_get_once(struct server *s, struct server *via, const char *rel, struct sink *sink, int nocache,
                         enum fail_kind *kind, char *err, size_t errlen) {
    char why[600], hp[300];
    struct server *c = via && !via->direct ? via : s; /* where the TCP connection goes */
    *kind = FK_CONNECT;
    if (resolve_server(c, err, errlen) < 0) return -1;
    if (!the_rd && !(the_rd = malloc(sizeof *the_rd))) {
        snprintf(err, errlen, "out of memory");
        *kind = FK_TRANSFER;
        return -1;
    }
    host_port(s, hp, sizeof hp);
    int64_t deadline = now_ms() + (int64_t)opt.deadline * 1000;
    int reused = c->fd >= 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        *kind = FK_TRANSFER;
        if (sink_reset(sink) < 0) {
            snprintf(err, errlen, "%s", sink->err);
            return -1;
        }
        if (c->fd < 0) {
            *kind = FK_CONNECT;
            c->fd = tcp_connect(c, deadline, err, errlen);
            if (c->fd < 0) {
                if (c != s) { /* name the proxy: its failure moves to the next proxy, not the next server */
                    snprintf(why, sizeof why, "GET %s/%s via proxy %s: %s", s->url, rel, c->url, err);
                    snprintf(err, errlen, "%s", why);
                }
                return -1;
            }
            reused = 0;
            *kind = FK_TRANSFER;
        }
        char req[2400];
        /* through a proxy the request names the whole URL (absolute form); to a server only the path */
        int n = snprintf(req, sizeof req,
                         "GET %s%s%s/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " PROG "/1\r\n"
                         "Accept-Encoding: identity\r\nConnection: keep-alive\r\n%s\r\n",
                         c != s ? "http://" : "", c != s ? hp : "", s->path, rel, hp,
                         nocache ? "Pragma: no-cache\r\nCache-Control: no-cache\r\n" : "");
        if (n < 0 || n >= (int)sizeof req) {
            snprintf(err, errlen, "GET %s/%s: URL too long", s->url, rel);
            return -1;
        }
        struct rd *r = the_rd;
        r->fd = c->fd;
        r->mem = NULL;
        r->deadline = deadline;
        r->pos = r->len = 0;
        r->eof = r->timed_out = 0;
        int keep = 0, status;
        if (send_all(c->fd, req, (size_t)n, deadline) < 0) {
            status = -1;
            snprintf(why, sizeof why, "cannot send the request");
        } else {
            status = http_read_response(r, sink, &keep, why, sizeof why);
        }
        if (status < 0 && reused && r->len == 0 && !r->timed_out) {
            server_close(c); /* stale keep-alive connection: once more on a fresh one */
            continue;
        }
        if (status < 0 && r->timed_out && now_ms() >= deadline)
            snprintf(why + strlen(why), sizeof why - strlen(why), " (deadline of %d s)", opt.deadline);
        if (!keep) server_close(c);
        if (status > 0 && status != 200) *kind = FK_HTTP;
        else if (status < 0 && sink->bad) *kind = FK_BAD_DATA;
        if (status != 200)
            snprintf(err, errlen, "GET %s/%s%s%s%s: %s", s->url, rel, c != s ? " via proxy " : "", c != s ? c->url : "",
                     nocache ? " (no-cache)" : "", why);
        return status;
    }
    return -1;
}

/* ------------------------------------------------------------------------------- failover state */
/* Proxies (--proxy) and servers (--url) are chosen as the reference client does (cvmfs download.cc):
 * the current proxy and server stay current across requests until one fails.
 *   proxy failure: cannot connect to the proxy, a timeout (idle or deadline), a truncated, malformed or
 *     oversized response, an HTTP status other than those below, or corrupted content once more after
 *     the no-cache retry. It moves to the next member of the group (rotating from the member this client
 *     started on), after the whole group to the next group (wrapping around). Once every proxy has
 *     failed for one request, the failure counts as a server failure and proxies start over at the
 *     first group.
 *   server failure: HTTP 400, 404, 429 and 5xx (through a proxy these come from the server: a proxy
 *     that cannot reach it answers 502/503/504), or any failure of a DIRECT connection. It moves to the
 *     next server URL; after every server has failed the request waits (1, 2, 4, 8 s) and starts a new
 *     round (--retries), then gives up with EIO (ENOENT if every answer was 404).
 *   corrupted content (SHA-1 or zlib): the same proxy and server are asked once more with
 *     "Pragma: no-cache" and "Cache-Control: no-cache", so a proxy holding a corrupted copy fetches anew.
 * Nothing leaves the configured groups: DIRECT is used only where the list names it. Slowness alone is
 * no failure: a proxy fails on --timeout seconds without a byte or on the --deadline of one request,
 * never for a low transfer rate (a slow site proxy must not push a site's traffic to a backup). */
static struct proxy_spec proxies;                /* ngroups == 0: no --proxy, every request DIRECT */
static int proxy_group;                          /* current group */
static int proxy_member[MAX_PROXY_GROUPS];       /* current member within each group */
static uint64_t stat_proxy_failovers, stat_host_failovers;

static struct server *current_proxy(void) {
    if (!proxies.ngroups) return NULL;
    return &proxies.proxy[proxies.first[proxy_group] + proxy_member[proxy_group]];
}

/* Where each group starts for this client: a hash of the machine (machine-id, else host name), so
 * the clients of a site spread over the members while each one always starts on the same member. */
static void proxy_init_members(void) {
    char id[256] = "";
    FILE *f = fopen("/etc/machine-id", "r");
    if (!f || !fgets(id, sizeof id, f)) {
        if (gethostname(id, sizeof id - 1) < 0) id[0] = 0;
    }
    if (f) fclose(f);
    for (int g = 0; g < proxies.ngroups; g++) {
        unsigned h = 2166136261u ^ (unsigned)g;
        for (const char *p = id; *p && *p != '\n'; p++) h = (h ^ (unsigned char)*p) * 16777619u;
        h ^= h >> 15;
        proxy_member[g] = (int)(h % (unsigned)(proxies.first[g + 1] - proxies.first[g]));
    }
}

/* The current proxy failed: the next member of its group, or the first of the next group once
 * BURNED members of this group have failed in this request. */
static void proxy_switch(int *burned) {
    struct server *old = current_proxy();
    int g = proxy_group, size = proxies.first[g + 1] - proxies.first[g];
    if (++*burned >= size) {
        proxy_group = (g + 1) % proxies.ngroups;
        *burned = 0;
    } else {
        proxy_member[g] = (proxy_member[g] + 1) % size;
    }
    stat_proxy_failovers++;
    if (current_proxy() != old) logmsg("switching proxy from %s to %s", old->url, current_proxy()->url);
}

/* GET REL: see "failover state" above for the order. 0 ok, -ENOENT (404 everywhere), -EIO. */
static int http_get(const char *rel, struct sink *sink, char *err, size_t errlen) {
    int all404 = 1, nocache = 0;
    for (int round = 0; round <= opt.retries; round++) {
        if (round) {
            unsigned delay = 1u << (round - 1);
            DEBUG("retrying %s in %u s: %s", rel, delay > 8 ? 8 : delay, err);
            sleep(delay > 8 ? 8 : delay);
        }
        int used_hosts = 0, used_proxies = 0, burned = 0;
        for (;;) {
            struct server *s = &servers[preferred_server], *via = current_proxy();
            enum fail_kind kind;
            int st = http_get_once(s, via, rel, sink, nocache, &kind, err, errlen);
            if (st == 200) {
                stat_objects++;
                DEBUG("fetched %s from %s%s%s (%llu bytes)", rel, s->url, via ? " via " : "", via ? via->url : "",
                      (unsigned long long)sink->in_len);
                return 0;
            }
            if (st != 404) all404 = 0;
            if (kind == FK_BAD_DATA && !nocache) {
                nocache = 1; /* once more, asking caches on the way for a fresh copy */
                DEBUG("%s; retrying with no-cache", err); /* the final failure, if any, is the one line */
                continue;
            }
            int host_failure = !via || via->direct || st == 400 || st == 404 || st == 429 || (st >= 500 && st < 600);
            if (!host_failure) {
                if (++used_proxies < proxies.nproxies) {
                    DEBUG("%s", err);
                    proxy_switch(&burned);
                    continue;
                }
                /* every proxy failed for this request: a server failure, proxies start over */
                if (proxy_group != 0) logmsg("all proxies failed; back to the first proxy group");
                proxy_group = 0;
                burned = 0;
            }
            if (++used_hosts >= opt.nservers) break;
            DEBUG("%s", err);
            preferred_server = (preferred_server + 1) % opt.nservers;
            stat_host_failovers++;
            DEBUG("switching server to %s", servers[preferred_server].url); /* as before: quiet */
        }
        if (all404) break; /* the object is not there: retrying does not help */
    }
    return all404 ? -ENOENT : -EIO;
}

/* ------------------------------------------------------------------------------- LRU disk cache */
/* Objects live in the cache directory (the process's working directory) as data/xx/<hex><suffix>,
 * decompressed. An in-memory LRU list over them evicts the least recently used when the total
 * exceeds the limit; catalogs are pinned (they stay open). Order after a restart: file mtime. */
struct centry {
    char name[64];
    uint64_t size;
    int pinned;
    struct centry *prev, *next, *hnext;
};
#define CBUCKETS 65536
static struct centry *cbucket[CBUCKETS];
static struct centry *lru_head, *lru_tail; /* head = most recent */
static uint64_t cache_total, cache_limit;

static unsigned chash(const char *s) {
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % CBUCKETS;
}
static struct centry *cfind(const char *name) {
    for (struct centry *e = cbucket[chash(name)]; e; e = e->hnext)
        if (!strcmp(e->name, name)) return e;
    return NULL;
}
static void lru_unlink(struct centry *e) {
    if (e->prev) e->prev->next = e->next; else lru_head = e->next;
    if (e->next) e->next->prev = e->prev; else lru_tail = e->prev;
    e->prev = e->next = NULL;
}
static void lru_front(struct centry *e) {
    e->next = lru_head;
    e->prev = NULL;
    if (lru_head) lru_head->prev = e;
    lru_head = e;
    if (!lru_tail) lru_tail = e;
}
static void lru_back(struct centry *e) {
    e->prev = lru_tail;
    e->next = NULL;
    if (lru_tail) lru_tail->next = e;
    lru_tail = e;
    if (!lru_head) lru_head = e;
}
static void cache_evict(void) {
    struct centry *e = lru_tail;
    while (cache_total > cache_limit && e) {
        struct centry *prev = e->prev;
        if (!e->pinned) {
            char path[80];
            snprintf(path, sizeof path, "data/%.2s/%s", e->name, e->name + 2);
            unlink(path); /* open file handles keep their data */
            DEBUG("evicted %s (%llu bytes)", path, (unsigned long long)e->size);
            cache_total -= e->size;
            lru_unlink(e);
            struct centry **pp = &cbucket[chash(e->name)];
            while (*pp != e) pp = &(*pp)->hnext;
            *pp = e->hnext;
            free(e);
        }
        e = prev;
    }
}
static struct centry *cache_add(const char *name, uint64_t size, int at_back) {
    struct centry *e = cfind(name);
    if (e) {
        lru_unlink(e);
        cache_total -= e->size;
    } else {
        e = calloc(1, sizeof *e);
        if (!e) {
            logmsg("out of memory: object %s is not accounted for in the cache", name);
            return NULL;
        }
        snprintf(e->name, sizeof e->name, "%s", name);
        unsigned h = chash(name);
        e->hnext = cbucket[h];
        cbucket[h] = e;
    }
    e->size = size;
    cache_total += size;
    if (at_back) lru_back(e); else lru_front(e);
    return e;
}

struct scanned {
    char name[64];
    uint64_t size;
    time_t mtime;
};
static int cmp_scanned(const void *a, const void *b) { /* newest first */
    const struct scanned *x = a, *y = b;
    return (x->mtime < y->mtime) - (x->mtime > y->mtime);
}

static void cache_init(void) {
    if (mkdir("data", 0700) < 0 && errno != EEXIST) die("cannot create %s/data: %s", opt.cache_dir, strerror(errno));
    struct scanned *list = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < 256; i++) {
        char d[16];
        snprintf(d, sizeof d, "data/%02x", i);
        if (mkdir(d, 0700) < 0 && errno != EEXIST) die("cannot create %s/%s: %s", opt.cache_dir, d, strerror(errno));
        DIR *dir = opendir(d);
        if (!dir) continue;
        struct dirent *de;
        while ((de = readdir(dir))) {
            char p[300];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", d, de->d_name);
            if (!strncmp(de->d_name, ".tmp", 4) || !strncmp(de->d_name, ".pf", 3)) { /* leftover of an interrupted download */
                unlink(p);
                continue;
            }
            if (de->d_name[0] == '.' || strlen(de->d_name) > 60) continue;
            if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) continue;
            if (n == cap) list = xrealloc(list, (cap = cap ? cap * 2 : 256) * sizeof *list);
            snprintf(list[n].name, sizeof list[n].name, "%02x%s", i, de->d_name);
            list[n].size = (uint64_t)st.st_size;
            list[n].mtime = st.st_mtime;
            n++;
        }
        closedir(dir);
    }
    qsort(list, n, sizeof *list, cmp_scanned);
    for (size_t i = 0; i < n; i++) cache_add(list[i].name, list[i].size, 1);
    free(list);
    cache_evict();
    DEBUG("cache %s: %zu objects, %llu bytes, limit %llu", opt.cache_dir, n, (unsigned long long)cache_total,
          (unsigned long long)cache_limit);
}

/* What may arrive for one object: at most IN received bytes, at most OUT bytes once inflated; with
 * EXACT the inflated size must be OUT (data objects: the catalog records their size). */
struct limits {
    uint64_t in, out;
    int exact;
};
static struct limits data_limits(uint64_t size, int raw) {
    struct limits l = {raw ? size : zlib_bound(size), size, 1};
    return l;
}
static struct limits meta_limits(uint64_t max) {
    struct limits l = {zlib_bound(max), max, 0};
    return l;
}

/* ------------------------------------------------------------------------------- boot prefetch
 * A boot reads the same objects in the same order every time. The publisher may put beside the
 * snapshot a list of them, .cvmfsprefetch-<root hash>: "cvmfs-prefetch 1 <root hash>" and then one
 * object name per line (40 hex digits and an optional capital suffix), in boot order. It is not
 * signed and need not be: after mounting, --prefetch N worker processes fetch the listed objects
 * into the cache in parallel, each over its own keep-alive connection, through the same code as any
 * object (SHA-1 checked against its name, inflated, size-bounded, temporary file and rename), so a
 * lying list can only name objects that exist under their own hash: it costs time and bandwidth,
 * bounded by the list's limits below, never correctness. A malformed list (or one for another root
 * hash) is ignored as a whole with one log line. Objects the catalog marks uncompressed are never
 * taken from the prefetch (the worker cannot know they are raw), and data objects must have the
 * catalog's size. While a worker fetches an object it holds an exclusive flock on data/xx/.pf<rest>;
 * the file system process waits for that lock instead of fetching the same object twice. */
#define MAX_PREFETCH_LIST (4u << 20)        /* bytes of list */
#define MAX_PREFETCH_ENTRIES 65536
#define MAX_PREFETCH_OBJECT (64ULL << 20)   /* one object, inflated */
#define MAX_PREFETCH_TOTAL (2ULL << 30)     /* all of them, and at most half the cache */
#define MAX_PREFETCH_WORKERS 16
#define PREFETCH_NAME_MAX 42
static int prefetch_started;
static uint64_t prefetch_size; /* size of the object prefetch_take() took */

/* A prefetch list's lines after the header: 1..MAX names into NAMES (each up to 41 chars + NUL).
 * Returns the count, or -1 with ERR if any line is malformed, duplicated names included. */
static int parse_prefetch_list(const unsigned char *d, size_t len, const char *root_hash, char (*names)[PREFETCH_NAME_MAX],
                               int max, char *err, size_t errlen) {
    char header[80];
    snprintf(header, sizeof header, "cvmfs-prefetch 1 %s\n", root_hash);
    size_t hl = strlen(header);
    if (len < hl || memcmp(d, header, hl) != 0) {
        snprintf(err, errlen, "its first line is not \"cvmfs-prefetch 1 %.48s\"", root_hash);
        return -1;
    }
    int n = 0, line = 1;
    size_t i = hl;
    while (i < len) {
        const unsigned char *nl = memchr(d + i, '\n', len - i);
        if (!nl) {
            snprintf(err, errlen, "line %d has no newline", line + 1);
            return -1;
        }
        size_t l = (size_t)(nl - (d + i));
        line++;
        int ok = (l == 40 || l == 41) && (l == 40 || (d[i + 40] >= 'A' && d[i + 40] <= 'Z'));
        for (size_t k = 0; ok && k < 40; k++)
            ok = (d[i + k] >= '0' && d[i + k] <= '9') || (d[i + k] >= 'a' && d[i + k] <= 'f');
        if (!ok) {
            snprintf(err, errlen, "line %d is not an object name", line);
            return -1;
        }
        if (n == max) {
            snprintf(err, errlen, "more than %d objects", max);
            return -1;
        }
        memcpy(names[n], d + i, l);
        names[n][l] = 0;
        n++;
        i += l + 1;
    }
    return n;
}

/* In the file system process: NAME is not in the cache index. If a prefetch worker is fetching it,
 * wait for it; take the file if it is there and fits LIM (data objects: exactly the catalog's size).
 * 1 taken (size in prefetch_size), 0 not there. */
static int prefetch_take(const char *name, const char *path, struct limits lim, int *claim_fd) {
    *claim_fd = -1;
    if (!prefetch_started) return 0;
    char claim[96];
    snprintf(claim, sizeof claim, "data/%.2s/.pf%s", name, name + 2);
    int cfd = open(claim, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (cfd >= 0) { /* a worker fetching it holds this lock; once ours, no worker starts it */
        while (flock(cfd, LOCK_EX) < 0 && errno == EINTR) {}
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
        *claim_fd = cfd; /* the caller fetches it, then releases the claim */
        return 0;
    }
    if (cfd >= 0) {
        unlink(claim);
        close(cfd);
    }
    if ((lim.exact && (uint64_t)st.st_size != lim.out) || (uint64_t)st.st_size > lim.out) {
        logmsg("prefetched object %s has %llu bytes, expected %s%llu: fetching it again", path,
               (unsigned long long)st.st_size, lim.exact ? "" : "at most ", (unsigned long long)lim.out);
        unlink(path);
        return 0;
    }
    prefetch_size = (uint64_t)st.st_size;
    return 1;
}

static int fetch_object(const char *hex, char suffix, int raw, struct limits lim, char *path, size_t pathlen,
                        int pin);

static void claim_release(const char *name, int claim_fd) {
    if (claim_fd < 0) return;
    char claim[96];
    snprintf(claim, sizeof claim, "data/%.2s/.pf%s", name, name + 2);
    unlink(claim);
    close(claim_fd);
}

/* One worker: every NW-th name from W on, while its share of the budget lasts. */
static void prefetch_worker(char (*names)[PREFETCH_NAME_MAX], int n, int w, int nw, uint64_t budget, int64_t t0) {
    uint64_t got = 0;
    int fetched = 0, failed = 0;
    for (int i = w; i < n && got < budget; i += nw) {
        const char *name = names[i];
        char path[96], claim[96], hex[41];
        snprintf(path, sizeof path, "data/%.2s/%s", name, name + 2);
        if (access(path, F_OK) == 0) continue;
        snprintf(claim, sizeof claim, "data/%.2s/.pf%s", name, name + 2);
        int cfd = open(claim, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (cfd < 0) continue;
        if (flock(cfd, LOCK_EX | LOCK_NB) < 0 || access(path, F_OK) == 0) { /* taken by someone else */
            close(cfd);
            continue;
        }
        memcpy(hex, name, 40);
        hex[40] = 0;
        uint64_t left = budget - got;
        struct limits lim = meta_limits(left < MAX_PREFETCH_OBJECT ? left : MAX_PREFETCH_OBJECT);
        uint64_t before = stat_rx_bytes;
        char p2[96];
        if (fetch_object(hex, name[40], 0, lim, p2, sizeof p2, 0) == 0) fetched++;
        else failed++;
        got += stat_rx_bytes - before > 0 ? stat_rx_bytes - before : 1;
        unlink(claim);
        close(cfd);
    }
    DEBUG("prefetch worker %d: %d objects, %d failed, %llu bytes in %.1f s", w, fetched, failed,
          (unsigned long long)got, (now_ms() - t0) / 1000.0);
    _exit(failed ? 3 : 0);
}

/* After mounting, in the file system process (before its loop): start the prefetch in the
 * background (a grandchild, so nothing here waits for it) and return at once. */
static void prefetch_start(int fuse_fd, const char *root_hash) {
    if (opt.prefetch <= 0) return;
    prefetch_started = 1;
    pid_t p = fork();
    if (p < 0) return;
    if (p > 0) {
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {}
        return;
    }
    if (fork() != 0) _exit(0); /* the grandchild goes on, adopted by init */
    prefetch_started = 0; /* a worker never waits for a claim: it would wait for its own */
    close(fuse_fd);
    for (int i = 0; i < opt.nservers; i++) servers[i].fd = -1; /* the parent's connections stay its own */
    for (int i = 0; i < proxies.nproxies; i++) proxies.proxy[i].fd = -1;
    cache_limit = UINT64_MAX; /* workers never evict: the budget bounds what they add */
    opt.retries = 0; /* an object a worker cannot fetch is left to the mount, which retries */
    int64_t t0 = now_ms();
    char rel[96], err[1024] = "";
    snprintf(rel, sizeof rel, ".cvmfsprefetch-%s", root_hash);
    struct sink sk;
    sink_init(&sk, rel, -1, 1, NULL, MAX_PREFETCH_LIST, MAX_PREFETCH_LIST);
    int rc = http_get(rel, &sk, err, sizeof err);
    if (rc < 0) {
        if (rc == -ENOENT) DEBUG("no prefetch list %s", rel);
        else logmsg("prefetch list %s: %s (booting without it)", rel, err);
        _exit(0);
    }
    char (*names)[PREFETCH_NAME_MAX] = xmalloc(sizeof *names * MAX_PREFETCH_ENTRIES);
    int n = parse_prefetch_list(sk.mem ? sk.mem : (const unsigned char *)"", (size_t)sk.in_len, root_hash,
                                names, MAX_PREFETCH_ENTRIES, err, sizeof err);
    sink_free(&sk);
    if (n < 0) {
        logmsg("prefetch list %s ignored: %s", rel, err);
        _exit(0);
    }
    for (int i = 0; i < opt.nservers; i++) server_close(&servers[i]); /* each worker opens its own */
    for (int i = 0; i < proxies.nproxies; i++) server_close(&proxies.proxy[i]);
    int nw = opt.prefetch > MAX_PREFETCH_WORKERS ? MAX_PREFETCH_WORKERS : opt.prefetch;
    uint64_t total = ((uint64_t)opt.cache_mb << 20) / 2;
    if (total > MAX_PREFETCH_TOTAL) total = MAX_PREFETCH_TOTAL;
    for (int w = 0; w < nw; w++) {
        pid_t c = fork();
        if (c == 0) prefetch_worker(names, n, w, nw, total / (uint64_t)nw, t0);
    }
    int failed = 0;
    for (int w = 0; w < nw; w++) {
        int status;
        if (wait(&status) > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) failed++;
    }
    logmsg("prefetch: %d objects listed, %d workers, done in %.1f s%s", n, nw, (now_ms() - t0) / 1000.0,
           failed ? " (some objects could not be fetched)" : "");
    _exit(0);
}

/* Make object HEX+SUFFIX present in the cache, decompressed (unless RAW). Writes its relative path
 * to PATH. The body is hashed and inflated as it arrives into a temporary file beside the final one,
 * renamed once complete and verified. 0 ok, -EIO on any failure (one line logged: corruption is
 * worth a line on the console). */
static int fetch_object(const char *hex, char suffix, int raw, struct limits lim, char *path, size_t pathlen,
                        int pin) {
    char name[64];
    snprintf(name, sizeof name, "%.60s", hex);
    if (suffix) {
        size_t l = strlen(name);
        name[l] = suffix;
        name[l + 1] = 0;
    }
    snprintf(path, pathlen, "data/%.2s/%s", name, name + 2);
    struct centry *e = cfind(name);
    if (e && access(path, F_OK) == 0) {
        lru_unlink(e);
        lru_front(e);
        if (pin) e->pinned = 1;
        return 0;
    }
    int claim_fd = -1;
    if (!e && !raw && prefetch_take(name, path, lim, &claim_fd)) {
        e = cache_add(name, prefetch_size, 0);
        if (!e) return 0;
        e->pinned = 1;
        cache_evict();
        e->pinned = pin;
        return 0;
    }
    /* The temporary file lives in the object's own directory: a rename within one directory takes
     * only that directory's lock. A cross-directory rename would take the file system's rename
     * mutex, which overlayfs (6.1) holds while it copies a file up from this very mount when the
     * cache shares a file system with the overlay's upper layer (scratch disk, tmpfs): deadlock. */
    char tmp[96];
    snprintf(tmp, sizeof tmp, "data/%.2s/.tmpXXXXXX", name);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        claim_release(name, claim_fd);
        logmsg("cache %s: cannot create a file: %s", opt.cache_dir, strerror(errno));
        return -EIO;
    }
    struct sink sk;
    sink_init(&sk, path, fd, raw, hex, lim.in, lim.out);
    char err[1024] = "";
    int rc = http_get(path, &sk, err, sizeof err);
    uint64_t size = sk.out_len;
    sink_free(&sk);

    if (rc == 0 && lim.exact && size != lim.out) {
        snprintf(err, sizeof err, "object %s has %llu bytes, the catalog says %llu", path, (unsigned long long)size,
                 (unsigned long long)lim.out);
        rc = -EIO;
    }
    if (close(fd) < 0 && rc == 0) {
        snprintf(err, sizeof err, "cache %s: write failed: %s", opt.cache_dir, strerror(errno));
        rc = -EIO;
    }
    if (rc == 0 && rename(tmp, path) < 0) {
        snprintf(err, sizeof err, "cache %s: cannot rename: %s", opt.cache_dir, strerror(errno));
        rc = -EIO;
    }
    claim_release(name, claim_fd);
    if (rc < 0) {
        unlink(tmp);
        logmsg("cannot fetch object %s: %s", path, err);
        return -EIO;
    }
    e = cache_add(name, size, 0);
    if (!e) return 0; /* present, only not accounted for */
    e->pinned = 1; /* the caller opens it next: never evict what was just fetched */
    cache_evict();
    e->pinned = pin;
    return 0;
}

/* ------------------------------------------------------------------------------------ catalogs */
struct nested_ref {
    char *path;
    size_t len;
    char hash[48];
    uint64_t size; /* uncompressed, as the parent records it (0: not recorded) */
    struct catalog *cat;
};
struct catalog {
    int id;
    char hash[48];
    char *prefix;
    sqlite3 *db;
    sqlite3_stmt *st_lookup, *st_list, *st_chunks;
    struct nested_ref *nested;
    int nnested;
};
static struct catalog **catalogs;
static int ncatalogs;
static struct catalog *root_catalog;

static struct {
    char fqrn[256];
    char root_hash[48];
    char tag[256];
    long long revision;
} mounted;

static const char *COLS_FMT =
    "SELECT rowid, %s, hash, size, mode, mtime, %s, flags, name, symlink, uid, gid, %s FROM catalog ";

/* Fetch (at most MAX_SIZE bytes once inflated; 0: MAX_CATALOG_BYTES) and open catalog HEX. NULL
 * after one logged line on any failure. */
static struct catalog *open_catalog(const char *hex, const char *expect_prefix, uint64_t max_size) {
    if (!is_hex40(hex)) {
        logmsg("catalog hash %s is not a SHA-1 (other algorithms are not supported)", hex);
        return NULL;
    }
    char path[128];
    if (!max_size || max_size > MAX_CATALOG_BYTES) max_size = MAX_CATALOG_BYTES;
    if (fetch_object(hex, 'C', 0, meta_limits(max_size), path, sizeof path, 1) < 0) return NULL;
    struct catalog *c = calloc(1, sizeof *c);
    if (!c) {
        logmsg("catalog %s: out of memory", hex);
        return NULL;
    }
    snprintf(c->hash, sizeof c->hash, "%s", hex);
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s?immutable=1", path);
    if (sqlite3_open_v2(uri, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        logmsg("catalog %s: cannot open: %s", hex, sqlite3_errmsg(c->db));
        goto fail;
    }
    /* properties: schema and root prefix */
    sqlite3_stmt *st;
    c->prefix = strdup("");
    if (!c->prefix) goto nomem;
    int have_schema = 0;
    if (sqlite3_prepare_v2(c->db, "SELECT key, value FROM properties", -1, &st, NULL) != SQLITE_OK) {
        logmsg("catalog %s is not a valid catalog database: %s", hex, sqlite3_errmsg(c->db));
        goto fail;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0), *v = (const char *)sqlite3_column_text(st, 1);
        if (!k || !v) continue;
        if (!strcmp(k, "schema")) have_schema = 1;
        if (!strcmp(k, "root_prefix") && strcmp(v, "/") != 0) {
            free(c->prefix);
            if (!(c->prefix = strdup(v))) {
                sqlite3_finalize(st);
                goto nomem;
            }
        }
    }
    sqlite3_finalize(st);
    if (!have_schema) {
        logmsg("catalog %s lacks the schema property", hex);
        goto fail;
    }
    if (expect_prefix && strcmp(expect_prefix, c->prefix) != 0) {
        logmsg("catalog %s has root prefix '%s', its parent expects '%s'", hex, c->prefix, expect_prefix);
        goto fail;
    }
    /* tolerate catalogs from older schema revisions without mtimens / xattr columns */
    int has_ns = 0, has_x = 0;
    if (sqlite3_prepare_v2(c->db, "PRAGMA table_info(catalog)", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *col = (const char *)sqlite3_column_text(st, 1);
            if (col && !strcmp(col, "mtimens")) has_ns = 1;
            if (col && !strcmp(col, "xattr")) has_x = 1;
        }
        sqlite3_finalize(st);
    }
    char sel[400], sql[600];
    snprintf(sel, sizeof sel, COLS_FMT, "hardlinks", has_ns ? "mtimens" : "NULL", has_x ? "xattr" : "NULL");
    snprintf(sql, sizeof sql, "%sWHERE md5path_1=? AND md5path_2=?", sel);
    if (sqlite3_prepare_v2(c->db, sql, -1, &c->st_lookup, NULL) != SQLITE_OK) goto sqlfail;
    snprintf(sql, sizeof sql, "SELECT name, mode, flags, md5path_1, md5path_2, rowid, hardlinks FROM catalog "
             "WHERE parent_1=? AND parent_2=?");
    if (sqlite3_prepare_v2(c->db, sql, -1, &c->st_list, NULL) != SQLITE_OK) goto sqlfail;
    if (sqlite3_prepare_v2(c->db, "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
                                  "ORDER BY offset", -1, &c->st_chunks, NULL) != SQLITE_OK) goto sqlfail;
    if (sqlite3_prepare_v2(c->db, "SELECT path, sha1, size FROM nested_catalogs ORDER BY path", -1, &st, NULL) !=
            SQLITE_OK &&
        sqlite3_prepare_v2(c->db, "SELECT path, sha1, 0 FROM nested_catalogs ORDER BY path", -1, &st, NULL) != SQLITE_OK)
        goto sqlfail;
    int cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(st, 0), *h = (const char *)sqlite3_column_text(st, 1);
        if (!p || !h) continue;
        if (c->nnested == cap) {
            struct nested_ref *nn = cap < (1 << 24) ? realloc(c->nested, (size_t)(cap = cap ? cap * 2 : 8) * sizeof *nn)
                                                   : NULL;
            if (!nn) {
                sqlite3_finalize(st);
                goto nomem;
            }
            c->nested = nn;
        }
        struct nested_ref *n = &c->nested[c->nnested];
        if (!(n->path = strdup(p))) {
            sqlite3_finalize(st);
            goto nomem;
        }
        c->nnested++;
        n->len = strlen(p);
        snprintf(n->hash, sizeof n->hash, "%s", h);
        sqlite3_int64 sz = sqlite3_column_int64(st, 2);
        n->size = sz > 0 ? (uint64_t)sz : 0;
        n->cat = NULL;
    }
    sqlite3_finalize(st);
    struct catalog **cs = realloc(catalogs, (size_t)(ncatalogs + 1) * sizeof *catalogs);
    if (!cs) goto nomem;
    catalogs = cs;
    c->id = ncatalogs;
    catalogs[ncatalogs++] = c;
    DEBUG("opened catalog %s for '%s' (%d nested)", hex, c->prefix, c->nnested);
    return c;
nomem:
    logmsg("catalog %s: out of memory", hex);
    goto fail;
sqlfail:
    logmsg("catalog %s is not a valid catalog database: %s", hex, sqlite3_errmsg(c->db));
fail:
    sqlite3_finalize(c->st_lookup);
    sqlite3_finalize(c->st_list);
    sqlite3_finalize(c->st_chunks);
    if (c->db) sqlite3_close(c->db);
    for (int i = 0; i < c->nnested; i++) free(c->nested[i].path);
    free(c->nested);
    free(c->prefix);
    free(c);
    return NULL;
}

/* The nested catalog (among N, sorted by path) whose mount point is PATH or a parent of it: the
 * first match; paths are compared component-wise ("/a" holds "/a/b", not "/ab"). */
static struct nested_ref *nested_find(struct nested_ref *refs, int n, const char *path) {
    for (int i = 0; i < n; i++) {
        struct nested_ref *r = &refs[i];
        if (r->len && !strncmp(path, r->path, r->len) && (path[r->len] == 0 || path[r->len] == '/')) return r;
    }
    return NULL;
}

/* The catalog holding PATH ("" = root), descending (and fetching) nested catalogs on the way. */
static struct catalog *catalog_for(const char *path) {
    struct catalog *c = root_catalog;
    for (int depth = 0; depth < 256; depth++) {
        struct nested_ref *hit = nested_find(c->nested, c->nnested, path);
        if (!hit) return c;
        if (!hit->cat) {
            hit->cat = open_catalog(hit->hash, hit->path, hit->size);
            if (!hit->cat) return NULL;
        }
        c = hit->cat;
    }
    logmsg("%s: nested catalogs deeper than 256 levels; refused", path);
    return NULL;
}

struct entry {
    uint64_t ino;
    mode_t mode;
    uint64_t size;
    int64_t mtime;
    long mtimens;
    unsigned flags;
    uid_t uid;
    gid_t gid;
    unsigned linkcount;
    int has_hash;
    char hash[41];
    char *symlink;
    unsigned char *xattr;
    int xattr_len;
    struct catalog *cat;
    int64_t md5a, md5b;
};
static void entry_free(struct entry *e) {
    free(e->symlink);
    free(e->xattr);
    e->symlink = NULL;
    e->xattr = NULL;
}

/* inode: catalog id and row; members of a hard-link group share one inode (never 0: readdir skips 0) */
static uint64_t make_ino(const struct catalog *c, int64_t rowid, unsigned group) {
    uint64_t base = ((uint64_t)c->id + 1) << 40;
    return group ? base | (1ULL << 39) | group : base | (uint64_t)rowid;
}

/* FUSE path ("/" or "/a/b") -> repository path ("" or "/a/b") */
static const char *repo_path(const char *p) { return strcmp(p, "/") == 0 ? "" : p; }

/* The columns of one catalog row, as SQLite hands them out. */
struct row {
    int64_t rowid;
    uint64_t hardlinks;
    const unsigned char *hash;
    int hashlen;
    int64_t size, mode, mtime, mtimens, flags, uid, gid;
    const char *symlink;
    const unsigned char *xattr;
    int xattrlen;
};

/* Row -> entry (copies what it keeps). 0, or -EIO (external files, out of memory). */
static int entry_from_row(struct entry *e, const struct catalog *c, const struct row *r) {
    if (r->size < 0) return -EIO; /* no file is larger than off_t allows (a broken catalog) */
    e->size = (uint64_t)r->size;
    e->mode = (mode_t)r->mode;
    e->mtime = r->mtime;
    e->mtimens = r->mtimens >= 0 && r->mtimens < 1000000000 ? (long)r->mtimens : 0;
    e->flags = (unsigned)r->flags;
    e->uid = (uid_t)r->uid;
    e->gid = (gid_t)r->gid;
    e->linkcount = (unsigned)(r->hardlinks & 0xffffffffu);
    unsigned group = (unsigned)(r->hardlinks >> 32);
    if (!e->linkcount) e->linkcount = 1;
    e->cat = (struct catalog *)c;
    e->ino = make_ino(c, r->rowid, group);
    if (r->hash && r->hashlen == 20) {
        for (int i = 0; i < 20; i++) sprintf(e->hash + 2 * i, "%02x", r->hash[i]);
        e->has_hash = 1;
    }
    if (e->flags & F_EXTERNAL) return -EIO;
    if (r->symlink && *r->symlink && !(e->symlink = strdup(r->symlink))) goto nomem;
    if (r->xattr && r->xattrlen > 0) {
        if (!(e->xattr = malloc((size_t)r->xattrlen))) goto nomem;
        memcpy(e->xattr, r->xattr, (size_t)r->xattrlen);
        e->xattr_len = r->xattrlen;
    }
    return 0;
nomem:
    logmsg("out of memory");
    entry_free(e);
    return -EIO;
}

/* 0, -ENOENT or -EIO */
static int lookup(const char *fpath, struct entry *e) {
    const char *path = repo_path(fpath);
    memset(e, 0, sizeof *e);
    struct catalog *c = catalog_for(path);
    if (!c) return -EIO;
    md5_pair(path, &e->md5a, &e->md5b);
    sqlite3_stmt *st = c->st_lookup;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, e->md5a);
    sqlite3_bind_int64(st, 2, e->md5b);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    struct row r = {
        .rowid = sqlite3_column_int64(st, 0),
        .hardlinks = (uint64_t)sqlite3_column_int64(st, 1),
        .hash = sqlite3_column_blob(st, 2),
        .hashlen = sqlite3_column_bytes(st, 2),
        .size = sqlite3_column_int64(st, 3),
        .mode = sqlite3_column_int64(st, 4),
        .mtime = sqlite3_column_int64(st, 5),
        .mtimens = sqlite3_column_int64(st, 6),
        .flags = sqlite3_column_int64(st, 7),
        .symlink = (const char *)sqlite3_column_text(st, 9),
        .uid = sqlite3_column_int64(st, 10),
        .gid = sqlite3_column_int64(st, 11),
        .xattr = sqlite3_column_blob(st, 12),
        .xattrlen = sqlite3_column_bytes(st, 12),
    };
    int64_t a = e->md5a, b = e->md5b;
    rc = entry_from_row(e, c, &r);
    e->md5a = a;
    e->md5b = b;
    sqlite3_reset(st);
    return rc;
}

/* Extended attributes as the catalog stores them: u8 version 1, u8 count, then per attribute u8 key
 * length, u8 value length, key, value. Anything that does not fit the blob ends the list. */
struct xattr_it {
    const unsigned char *x;
    int len, pos, left;
};
static void xattr_begin(struct xattr_it *it, const unsigned char *x, int len) {
    it->x = x;
    it->len = len;
    it->pos = 2;
    it->left = x && len >= 2 && x[0] == 1 ? x[1] : 0;
}
static int xattr_next(struct xattr_it *it, const unsigned char **key, int *kl, const unsigned char **val, int *vl) {
    if (it->left <= 0 || it->pos + 2 > it->len) return 0;
    int k = it->x[it->pos], v = it->x[it->pos + 1];
    if (it->pos + 2 + k + v > it->len || k == 0) return 0;
    *key = it->x + it->pos + 2;
    *kl = k;
    *val = *key + k;
    *vl = v;
    it->pos += 2 + k + v;
    it->left--;
    return 1;
}

/* getxattr semantics: the value's length (copied when SIZE > 0), -ENODATA, -ERANGE. */
static int xattr_get(const unsigned char *x, int len, const char *name, char *value, size_t size) {
    struct xattr_it it;
    const unsigned char *k, *v;
    int kl, vl;
    size_t nl = strlen(name);
    xattr_begin(&it, x, len);
    while (xattr_next(&it, &k, &kl, &v, &vl)) {
        if ((size_t)kl != nl || memcmp(k, name, nl)) continue;
        if (size == 0) return vl;
        if ((size_t)vl > size) return -ERANGE;
        memcpy(value, v, (size_t)vl);
        return vl;
    }
    return -ENODATA;
}

/* listxattr semantics: NUL-terminated names (copied when SIZE > 0); total length, or -ERANGE. Keys
 * with a NUL inside are skipped (they cannot be listed). */
static int xattr_list(const unsigned char *x, int len, char *list, size_t size) {
    struct xattr_it it;
    const unsigned char *k, *v;
    int kl, vl;
    size_t total = 0;
    xattr_begin(&it, x, len);
    while (xattr_next(&it, &k, &kl, &v, &vl)) {
        if (memchr(k, 0, (size_t)kl)) continue;
        if (size) {
            if (total + (size_t)kl + 1 > size) return -ERANGE;
            memcpy(list + total, k, (size_t)kl);
            list[total + (size_t)kl] = 0;
        }
        total += (size_t)kl + 1;
    }
    return (int)total;
}

/* readlink semantics for FUSE: the target, truncated to SIZE - 1 bytes and NUL-terminated. */
static void symlink_copy(char *out, size_t size, const char *target) {
    if (!size) return;
    size_t n = target ? strlen(target) : 0;
    if (n > size - 1) n = size - 1;
    if (n) memcpy(out, target, n);
    out[n] = 0;
}

static void fill_stat(const struct entry *e, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_ino = e->ino;
    st->st_mode = e->mode;
    st->st_nlink = e->linkcount;
    st->st_uid = e->uid;
    st->st_gid = e->gid;
    int dev = S_ISCHR(e->mode) || S_ISBLK(e->mode);
    st->st_rdev = dev ? (dev_t)e->size : 0;
    st->st_size = (e->flags & F_SPECIAL) ? 0 : (off_t)e->size;
    if (S_ISLNK(e->mode)) st->st_size = e->symlink ? (off_t)strlen(e->symlink) : 0;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)(((uint64_t)st->st_size + 511) / 512); /* st_size >= 0: entry_from_row */
    st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = e->mtime;
    st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = st->st_atim.tv_nsec = e->mtimens;
}

/* ----------------------------------------------------------------------------- FUSE operations */
static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->use_ino = 1;
    cfg->readdir_ino = 1;
    cfg->entry_timeout = cfg->attr_timeout = cfg->negative_timeout = 86400.0; /* immutable snapshot */
    cfg->kernel_cache = 1;
    return NULL;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    struct entry e;
    int rc = lookup(path, &e);
    if (rc < 0) return rc;
    fill_stat(&e, st);
    entry_free(&e);
    return 0;
}

static int op_readlink(const char *path, char *out, size_t size) {
    struct entry e;
    int rc = lookup(path, &e);
    if (rc < 0) return rc;
    if (!S_ISLNK(e.mode)) {
        entry_free(&e);
        return -EINVAL;
    }
    symlink_copy(out, size, e.symlink);
    entry_free(&e);
    return 0;
}

static int op_readdir(const char *fpath, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)off;
    (void)fi;
    (void)flags;
    const char *path = repo_path(fpath);
    struct entry d;
    int rc = lookup(fpath, &d);
    if (rc < 0) return rc;
    int isdir = S_ISDIR(d.mode);
    entry_free(&d);
    if (!isdir) return -ENOTDIR;
    struct catalog *c = catalog_for(path);
    if (!c) return -EIO;
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    int64_t a, b;
    md5_pair(path, &a, &b);
    sqlite3_stmt *st = c->st_list;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        unsigned fl = (unsigned)sqlite3_column_int64(st, 2);
        if (!name || !*name || (fl & F_HIDDEN)) continue;
        if (sqlite3_column_int64(st, 3) == a && sqlite3_column_int64(st, 4) == b) continue;
        struct stat s = {0};
        s.st_mode = (mode_t)sqlite3_column_int64(st, 1);
        s.st_ino = make_ino(c, sqlite3_column_int64(st, 5), (unsigned)((uint64_t)sqlite3_column_int64(st, 6) >> 32));
        if (filler(buf, name, &s, 0, 0)) break;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

struct piece {
    uint64_t offset, size;
    char hash[41]; /* "" when the catalog's hash is missing or not a SHA-1 */
    int fd;
};

/* Decode one chunks row into P. */
static void piece_set(struct piece *p, int64_t offset, int64_t size, const unsigned char *hb, int hlen) {
    p->offset = (uint64_t)offset;
    p->size = (uint64_t)size;
    p->fd = -1;
    p->hash[0] = 0;
    if (hb && hlen == 20)
        for (int i = 0; i < 20; i++) sprintf(p->hash + 2 * i, "%02x", hb[i]);
}

/* 0 when the N pieces (in offset order) each have a hash and cover [0, SIZE) exactly, contiguously,
 * without overflow; else -1 and *COVERED says how far they got. */
static int chunks_check(const struct piece *p, int n, uint64_t size, uint64_t *covered) {
    uint64_t expect = 0;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        if (!p[i].hash[0] || p[i].offset != expect || p[i].size > UINT64_MAX - expect) {
            ok = 0;
            break;
        }
        expect += p[i].size;
    }
    *covered = expect;
    return ok && expect == size ? 0 : -1;
}
struct fh {
    int npieces;
    int raw; /* stored uncompressed */
    char suffix;
    struct piece pieces[];
};

static int op_open(const char *fpath, struct fuse_file_info *fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    struct entry e;
    int rc = lookup(fpath, &e);
    if (rc < 0) return rc;
    if (!S_ISREG(e.mode) || (e.flags & (F_LINK | F_SPECIAL))) {
        entry_free(&e);
        return -EINVAL;
    }
    int raw = ((e.flags & F_COMP_MASK) >> F_COMP_SHIFT) == 1;
    struct fh *h;
    if (e.flags & F_CHUNK) {
        const char *path = repo_path(fpath);
        int n = 0, cap = 16;
        h = malloc(sizeof *h + (size_t)cap * sizeof(struct piece));
        if (!h) goto nomem;
        sqlite3_stmt *st = e.cat->st_chunks;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, e.md5a);
        sqlite3_bind_int64(st, 2, e.md5b);
        uint64_t expect = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (n == cap) {
                struct fh *h2 = cap < (1 << 24) ? realloc(h, sizeof *h + (size_t)(cap *= 2) * sizeof(struct piece)) : NULL;
                if (!h2) {
                    sqlite3_reset(st);
                    free(h);
                    goto nomem;
                }
                h = h2;
            }
            piece_set(&h->pieces[n++], sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                      sqlite3_column_blob(st, 2), sqlite3_column_bytes(st, 2));
        }
        sqlite3_reset(st);
        if (chunks_check(h->pieces, n, e.size, &expect) < 0) {
            logmsg("%s: chunk list is inconsistent (covers %llu of %llu bytes)", path, (unsigned long long)expect,
                   (unsigned long long)e.size);
            free(h);
            entry_free(&e);
            return -EIO;
        }
        h->npieces = n;
        h->suffix = 'P';
    } else {
        if (!e.has_hash) {
            entry_free(&e);
            return -EIO;
        }
        h = malloc(sizeof *h + sizeof(struct piece));
        if (!h) goto nomem;
        h->npieces = 1;
        h->suffix = 0;
        h->pieces[0].offset = 0;
        h->pieces[0].size = e.size;
        memcpy(h->pieces[0].hash, e.hash, 41);
        h->pieces[0].fd = -1;
    }
    h->raw = raw;
    entry_free(&e);
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 1;
    return 0;
nomem:
    logmsg("%s: out of memory", fpath);
    entry_free(&e);
    return -EIO;
}

static int piece_fd(struct fh *h, struct piece *p) {
    if (p->fd >= 0) return p->fd;
    if (p->fd == -2) return -EIO; /* failed before on this handle (the kernel's read-ahead asks again):
                                     one failure, one log line; the next open() tries anew */
    char path[128];
    if (fetch_object(p->hash, h->suffix, h->raw, data_limits(p->size, h->raw), path, sizeof path, 0) < 0) {
        p->fd = -2;
        return -EIO;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        logmsg("cache %s: cannot open %s: %s", opt.cache_dir, path, strerror(errno));
        p->fd = -2;
        return -EIO;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != p->size) {
        logmsg("object %s has %lld bytes, the catalog says %llu; refused", path, (long long)st.st_size,
               (unsigned long long)p->size);
        close(fd);
        unlink(path);
        p->fd = -2;
        return -EIO;
    }
    p->fd = fd;
    return fd;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    struct fh *h = (struct fh *)(uintptr_t)fi->fh;
    size_t done = 0;
    for (int i = 0; i < h->npieces && done < size; i++) {
        struct piece *p = &h->pieces[i];
        uint64_t pos = (uint64_t)off + done;
        if (pos < p->offset || pos - p->offset >= p->size) continue;
        int fd = piece_fd(h, p);
        if (fd < 0) return fd;
        size_t want = size - done;
        if (want > p->size - (pos - p->offset)) want = (size_t)(p->size - (pos - p->offset));
        ssize_t n = pread(fd, buf + done, want, (off_t)(pos - p->offset));
        if (n < 0) return -EIO;
        done += (size_t)n;
        if ((size_t)n < want) break;
    }
    return (int)done;
}

static int op_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    struct fh *h = (struct fh *)(uintptr_t)fi->fh;
    for (int i = 0; i < h->npieces; i++)
        if (h->pieces[i].fd >= 0) close(h->pieces[i].fd);
    free(h);
    return 0;
}

/* Attributes that say what is mounted (not listed, like cvmfs2's "magic" xattrs on the root). */
static int magic_xattr(const char *name, char *out, size_t cap) {
    if (!strcmp(name, "user.fqrn")) return snprintf(out, cap, "%s", mounted.fqrn);
    if (!strcmp(name, "user.root_hash")) return snprintf(out, cap, "%s", mounted.root_hash);
    if (!strcmp(name, "user.tag")) return snprintf(out, cap, "%s", mounted.tag);
    if (!strcmp(name, "user.revision")) return snprintf(out, cap, "%lld", mounted.revision);
    if (!strcmp(name, "user.rx_bytes")) return snprintf(out, cap, "%llu", (unsigned long long)stat_rx_bytes);
    if (!strcmp(name, "user.nobjects")) return snprintf(out, cap, "%llu", (unsigned long long)stat_objects);
    if (!strcmp(name, "user.cache_bytes")) return snprintf(out, cap, "%llu", (unsigned long long)cache_total);
    if (!strcmp(name, "user.host")) return snprintf(out, cap, "%s", servers[preferred_server].url);
    if (!strcmp(name, "user.proxy")) return snprintf(out, cap, "%s", current_proxy() ? current_proxy()->url : "DIRECT");
    if (!strcmp(name, "user.proxy_failovers"))
        return snprintf(out, cap, "%llu", (unsigned long long)stat_proxy_failovers);
    if (!strcmp(name, "user.host_failovers")) return snprintf(out, cap, "%llu", (unsigned long long)stat_host_failovers);
    return -1;
}

static int op_getxattr(const char *path, const char *name, char *value, size_t size) {
    struct entry e;
    int rc = lookup(path, &e);
    if (rc < 0) return rc;
    int found = xattr_get(e.xattr, e.xattr_len, name, value, size);
    entry_free(&e);
    if (found == -ENODATA && strcmp(path, "/") == 0) {
        char tmp[256];
        int n = magic_xattr(name, tmp, sizeof tmp);
        if (n >= 0) {
            if (size == 0) return n;
            if ((size_t)n > size) return -ERANGE;
            memcpy(value, tmp, (size_t)n);
            return n;
        }
    }
    return found;
}

static int op_listxattr(const char *path, char *list, size_t size) {
    struct entry e;
    int rc = lookup(path, &e);
    if (rc < 0) return rc;
    int total = xattr_list(e.xattr, e.xattr_len, list, size);
    entry_free(&e);
    return total;
}

static int op_statfs(const char *path, struct statvfs *st) {
    (void)path;
    memset(st, 0, sizeof *st);
    st->f_bsize = st->f_frsize = 4096;
    st->f_namemax = 255;
    st->f_blocks = (cache_limit + 4095) / 4096;
    st->f_bfree = st->f_bavail = cache_total < cache_limit ? (cache_limit - cache_total) / 4096 : 0;
    return 0;
}

static const struct fuse_operations ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .statfs = op_statfs,
};

/* ------------------------------------------------------------------------- signatures, manifest */
/* Split a signed letter "payload--\nhexdigest\nsignature". 0 ok, -1 malformed. */
static int split_letter(const unsigned char *d, size_t len, size_t *payload_len, char digest[64],
                        const unsigned char **sig, size_t *siglen) {
    size_t pos;
    if (len >= 3 && !memcmp(d, "--\n", 3)) pos = 0;
    else {
        const unsigned char *m = len >= 4 ? memmem(d, len, "\n--\n", 4) : NULL;
        if (!m) return -1;
        pos = (size_t)(m - d) + 1;
    }
    *payload_len = pos;
    const unsigned char *rest = d + pos + 3;
    size_t restlen = len - pos - 3;
    const unsigned char *nl = memchr(rest, '\n', restlen);
    if (!nl || nl == rest || nl - rest >= 64) return -1;
    for (const unsigned char *c = rest; c < nl; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return -1;
    memcpy(digest, rest, (size_t)(nl - rest));
    digest[nl - rest] = 0;
    *sig = nl + 1;
    *siglen = restlen - (size_t)(nl - rest) - 1;
    return 0;
}

static time_t parse_ts(const char *s, size_t len) { /* YYYYMMDDhhmmss, UTC; -1 if malformed */
    struct tm tm = {0};
    if (len != 14) return -1;
    int v[6], w[6] = {4, 2, 2, 2, 2, 2}, pos = 0;
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int i = 0; i < w[f]; i++, pos++) {
            if (s[pos] < '0' || s[pos] > '9') return -1;
            v[f] = v[f] * 10 + (s[pos] - '0');
        }
    }
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60) return -1;
    tm.tm_year = v[0] - 1900;
    tm.tm_mon = v[1] - 1;
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    return timegm(&tm);
}

static int parse_decimal(const char *v, size_t len, long long *out) { /* digits only, no overflow */
    long long x = 0;
    if (!len || len > 18) return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

/* A repository name that is also safe as part of a file name. */
static int valid_fqrn(const char *n) {
    size_t l = strlen(n);
    if (!l || l > 200 || n[0] == '.' || n[0] == '-') return 0;
    return strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == l;
}

struct manifest {
    char C[48], X[48], H[48], N[256];
    long long S, B;
    /* the letter */
    size_t plen;
    char digest[64];
    const unsigned char *sig;
    size_t siglen;
};

/* Parse and check .cvmfspublished (everything but the signature, which needs the certificate).
 * 0 ok, -1 with ERR. */
static int parse_manifest(const unsigned char *d, size_t len, struct manifest *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->S = m->B = -1;
    if (split_letter(d, len, &m->plen, m->digest, &m->sig, &m->siglen) < 0) {
        snprintf(err, errlen, ".cvmfspublished has no signature block");
        return -1;
    }
    char got[41];
    sha1_hex(d, m->plen, got);
    if (strcmp(got, m->digest) != 0) {
        snprintf(err, errlen, ".cvmfspublished was modified: its content does not match its signed digest");
        return -1;
    }
    char R[48] = "";
    for (size_t pos = 0; pos < m->plen;) {
        const unsigned char *nl = memchr(d + pos, '\n', m->plen - pos);
        size_t ll = nl ? (size_t)(nl - (d + pos)) : m->plen - pos;
        const char *line = (const char *)d + pos;
        pos += ll + 1;
        if (!ll) continue;
        const char *v = line + 1;
        size_t vl = ll - 1;
        char *dst = NULL;
        size_t cap = 0;
        switch (line[0]) {
        case 'C': dst = m->C, cap = sizeof m->C; break;
        case 'X': dst = m->X, cap = sizeof m->X; break;
        case 'H': dst = m->H, cap = sizeof m->H; break;
        case 'N': dst = m->N, cap = sizeof m->N; break;
        case 'R': dst = R, cap = sizeof R; break;
        case 'S':
        case 'B':
            if (parse_decimal(v, vl, line[0] == 'S' ? &m->S : &m->B) < 0) {
                snprintf(err, errlen, ".cvmfspublished has a malformed %c line", line[0]);
                return -1;
            }
            continue;
        default: continue;
        }
        if (vl >= cap || memchr(v, 0, vl)) {
            snprintf(err, errlen, ".cvmfspublished has a malformed %c line", line[0]);
            return -1;
        }
        memcpy(dst, v, vl);
        dst[vl] = 0;
    }
    if (!m->C[0] || !R[0] || m->S < 0) {
        snprintf(err, errlen, ".cvmfspublished lacks a required field (C, R, S)");
        return -1;
    }
    if (strcmp(R, "d41d8cd98f00b204e9800998ecf8427e") != 0) {
        snprintf(err, errlen, ".cvmfspublished has a wrong root path hash");
        return -1;
    }
    if (!m->X[0]) {
        snprintf(err, errlen, ".cvmfspublished names no certificate (X)");
        return -1;
    }
    if (!is_hex40(m->C) || !is_hex40(m->X) || (m->H[0] && !is_hex40(m->H))) {
        snprintf(err, errlen, ".cvmfspublished names an object that is not a SHA-1 (other algorithms are not supported)");
        return -1;
    }
    if (!valid_fqrn(m->N)) {
        snprintf(err, errlen, ".cvmfspublished has no valid repository name (N)");
        return -1;
    }
    return 0;
}

struct whitelist {
    char name[256];
    time_t expires;
    const unsigned char *fps; /* the fingerprint lines */
    size_t fpslen;
    size_t plen;
    char digest[64];
    const unsigned char *sig;
    size_t siglen;
};

/* Parse and check .cvmfswhitelist's structure and digest (not yet its signature). 0 ok, -1 with ERR. */
static int parse_whitelist(const unsigned char *d, size_t len, struct whitelist *w, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    if (split_letter(d, len, &w->plen, w->digest, &w->sig, &w->siglen) < 0) {
        snprintf(err, errlen, ".cvmfswhitelist has no signature block");
        return -1;
    }
    char got[41];
    sha1_hex(d, w->plen, got);
    if (strcmp(got, w->digest) != 0) {
        snprintf(err, errlen, ".cvmfswhitelist was modified: its content does not match its signed digest");
        return -1;
    }
    const unsigned char *lines[3];
    size_t lens[3], pos = 0;
    for (int i = 0; i < 3; i++) {
        const unsigned char *nl = pos < w->plen ? memchr(d + pos, '\n', w->plen - pos) : NULL;
        if (!nl) {
            snprintf(err, errlen, ".cvmfswhitelist is malformed (expected timestamp, E<expiry>, N<name> lines)");
            return -1;
        }
        lines[i] = d + pos;
        lens[i] = (size_t)(nl - (d + pos));
        pos += lens[i] + 1;
    }
    if (parse_ts((const char *)lines[0], lens[0]) < 0 || lens[1] < 1 || lines[1][0] != 'E' || lens[2] < 2 ||
        lines[2][0] != 'N' || lens[2] - 1 >= sizeof w->name || memchr(lines[2], 0, lens[2])) {
        snprintf(err, errlen, ".cvmfswhitelist is malformed (expected timestamp, E<expiry>, N<name> lines)");
        return -1;
    }
    memcpy(w->name, lines[2] + 1, lens[2] - 1);
    w->name[lens[2] - 1] = 0;
    w->expires = parse_ts((const char *)lines[1] + 1, lens[1] - 1);
    if (w->expires < 0) {
        snprintf(err, errlen, ".cvmfswhitelist has a malformed expiry");
        return -1;
    }
    w->fps = d + pos;
    w->fpslen = w->plen - pos;
    return 0;
}

/* Whether fingerprint FP ("AB:CD:...") is on one of the whitelist's lines (text after a space, tab
 * or '#' is a comment). */
static int whitelist_lists(const struct whitelist *w, const char *fp) {
    size_t fl = strlen(fp);
    for (size_t pos = 0; pos < w->fpslen;) {
        const unsigned char *l = w->fps + pos;
        const unsigned char *nl = memchr(l, '\n', w->fpslen - pos);
        size_t ll = nl ? (size_t)(nl - l) : w->fpslen - pos;
        pos += ll + 1;
        size_t tl = 0;
        while (tl < ll && l[tl] != ' ' && l[tl] != '\t' && l[tl] != '#') tl++;
        if (tl == fl && fl && !memcmp(l, fp, fl)) return 1;
    }
    return 0;
}

static EVP_PKEY *master_keys[MAX_KEYS];

static void load_master_keys(void) {
    for (int i = 0; i < opt.npubkeys; i++) {
        FILE *f = fopen(opt.pubkeys[i], "r");
        if (!f) die("cannot read master public key %s: %s", opt.pubkeys[i], strerror(errno));
        master_keys[i] = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        fclose(f);
        if (!master_keys[i]) die("%s is not a PEM public key", opt.pubkeys[i]);
    }
}

/* GET a signed letter (at most MAX bytes) into memory; dies with one line on failure (start-up). */
static unsigned char *fetch_letter(const char *name, uint64_t max, size_t *len) {
    char err[1024];
    struct sink sk;
    sink_init(&sk, name, -1, 1, NULL, max, max);
    int rc = http_get(name, &sk, err, sizeof err);
    if (rc == -ENOENT) die("%s is missing from %s (HTTP 404): not a CernVM-FS repository", name, servers[0].url);
    if (rc < 0) die("cannot fetch %s: %s", name, err);
    unsigned char *d = sk.mem;
    *len = (size_t)sk.in_len;
    sk.mem = NULL;
    sink_free(&sk);
    if (!d && !(d = calloc(1, 1))) die("out of memory");
    return d;
}

/* The trust chain, before anything is mounted: whitelist (master key, name, expiry, certificate
 * fingerprint), certificate, manifest signature. Fills M; dies with one line on any failure. */
static void verify_repository(struct manifest *m, unsigned char **mdata) {
    char err[512];
    size_t mlen, wlen;
    unsigned char *mb = fetch_letter(".cvmfspublished", MAX_MANIFEST_BYTES, &mlen);
    if (parse_manifest(mb, mlen, m, err, sizeof err) < 0) die("%s", err);
    if (opt.fqrn && strcmp(opt.fqrn, m->N) != 0) die("the server publishes repository '%s', not '%s'", m->N, opt.fqrn);

    /* certificate */
    char certpath[128];
    if (fetch_object(m->X, 'X', 0, meta_limits(MAX_CERT_BYTES), certpath, sizeof certpath, 1) < 0)
        die("cannot fetch the repository certificate");
    FILE *cf = fopen(certpath, "r");
    X509 *cert = cf ? PEM_read_X509_AUX(cf, NULL, NULL, NULL) : NULL;
    if (cf) fclose(cf);
    if (!cert) die("the repository certificate (%s) is not a PEM X.509 certificate", m->X);

    /* whitelist: digest, master key, name, expiry, fingerprint */
    unsigned char *wb = fetch_letter(".cvmfswhitelist", MAX_WHITELIST_BYTES, &wlen);
    struct whitelist w;
    if (parse_whitelist(wb, wlen, &w, err, sizeof err) < 0) die("%s", err);
    int signed_ok = 0;
    for (int i = 0; i < opt.npubkeys && !signed_ok; i++) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(master_keys[i], NULL);
        unsigned char rec[1024];
        size_t rl = sizeof rec;
        if (ctx && EVP_PKEY_verify_recover_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
            (size_t)EVP_PKEY_get_size(master_keys[i]) == w.siglen &&
            EVP_PKEY_verify_recover(ctx, rec, &rl, w.sig, w.siglen) > 0 && rl == strlen(w.digest) &&
            !memcmp(rec, w.digest, rl))
            signed_ok = 1;
        EVP_PKEY_CTX_free(ctx);
    }
    if (!signed_ok)
        die(".cvmfswhitelist of %s is not signed by the given master key%s (%s): refusing to mount", w.name,
            opt.npubkeys > 1 ? "s" : "", opt.pubkeys[0]);
    if (strcmp(w.name, m->N) != 0) die(".cvmfswhitelist is for repository '%s', not '%s'", w.name, m->N);
    time_t now = time(NULL);
    if (now / 3600 >= w.expires / 3600 && !opt.allow_expired) {
        char when[64];
        struct tm tm;
        gmtime_r(&w.expires, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        die(".cvmfswhitelist of %s expired on %s (check the clock or re-sign the whitelist)", m->N, when);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdn = 0;
    X509_digest(cert, EVP_sha1(), md, &mdn);
    char fp[128] = "";
    for (unsigned i = 0; i < mdn; i++) sprintf(fp + strlen(fp), i ? ":%02X" : "%02X", md[i]);
    if (!whitelist_lists(&w, fp)) die("the repository certificate %s is not on the whitelist of %s", fp, m->N);
    free(wb);

    /* manifest signature with the certificate */
    EVP_PKEY *ck = X509_get0_pubkey(cert);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int ok = ck && mctx && EVP_DigestVerifyInit(mctx, NULL, EVP_sha1(), NULL, ck) > 0 &&
             EVP_DigestVerify(mctx, m->sig, m->siglen, (const unsigned char *)m->digest, strlen(m->digest)) == 1;
    EVP_MD_CTX_free(mctx);
    X509_free(cert);
    if (!ok) die(".cvmfspublished: signature does not verify with the repository certificate");
    *mdata = mb; /* M points into it */
}

static void resolve_tag(const char *fqrn, const char *history, char *hash, size_t hlen, long long *revision) {
    if (!history[0]) die("repository %s has no history database, so no tag '%s'", fqrn, opt.tag);
    char path[128];
    if (fetch_object(history, 'H', 0, meta_limits(MAX_HISTORY_BYTES), path, sizeof path, 1) < 0)
        die("cannot fetch the history database of %s", fqrn);
    sqlite3 *db;
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s?immutable=1", path);
    sqlite3_stmt *st;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT hash, revision FROM tags WHERE name=?", -1, &st, NULL) != SQLITE_OK)
        die("history database of %s is not readable: %s", fqrn, sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, opt.tag, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        struct buf names = {0};
        if (sqlite3_prepare_v2(db, "SELECT name FROM tags ORDER BY name", -1, &st, NULL) == SQLITE_OK) {
            while (sqlite3_step(st) == SQLITE_ROW && names.len < 2000) {
                const char *n = (const char *)sqlite3_column_text(st, 0);
                if (!n) continue;
                if (names.len) buf_add(&names, ", ", 2);
                buf_add(&names, n, strlen(n));
            }
            sqlite3_finalize(st);
        }
        die("repository %s has no tag '%s' (known: %s)", fqrn, opt.tag, names.len ? (char *)names.data : "none");
    }
    const char *h = (const char *)sqlite3_column_text(st, 0);
    snprintf(hash, hlen, "%s", h ? h : "");
    *revision = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* --------------------------------------------------------------------------- rollback protection */
/* The newest manifest seen for a repository is remembered in the cache directory, in the file
 * "revision-<fqrn>" ("revision N\nroot HASH\nhistory HASH\n", replaced atomically). A validly signed
 * but older manifest served later (a stale proxy, a replay) is then ignored in favour of it. */
struct seen {
    long long revision;
    char root[48], history[48];
};

static int seen_name(const char *fqrn, char *out, size_t cap) {
    if (!valid_fqrn(fqrn)) return -1;
    int n = snprintf(out, cap, "revision-%s", fqrn);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* 0 ok, -1 malformed */
static int parse_seen(const char *d, size_t len, struct seen *s) {
    memset(s, 0, sizeof *s);
    s->revision = -1;
    for (size_t pos = 0; pos < len;) {
        const char *l = d + pos;
        const char *nl = memchr(l, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - l) : len - pos;
        pos += ll + 1;
        if (ll > 9 && !memcmp(l, "revision ", 9)) {
            if (parse_decimal(l + 9, ll - 9, &s->revision) < 0) return -1;
        } else if ((ll == 45 && !memcmp(l, "root ", 5)) || (ll == 48 && !memcmp(l, "history ", 8))) {
            int root = l[0] == 'r';
            char *dst = root ? s->root : s->history;
            memcpy(dst, l + (root ? 5 : 8), 40);
            dst[40] = 0;
            if (!is_hex40(dst)) return -1;
        } else if (ll) {
            return -1;
        }
    }
    return s->revision >= 0 && s->root[0] ? 0 : -1;
}

static int read_seen(const char *fqrn, struct seen *s) {
    char name[256], text[512];
    if (seen_name(fqrn, name, sizeof name) < 0) return -1;
    int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text);
    close(fd);
    if (n <= 0 || n == (ssize_t)sizeof text) return -1;
    if (parse_seen(text, (size_t)n, s) < 0) {
        logmsg("warning: ignoring the malformed %s/%s", opt.cache_dir, name);
        return -1;
    }
    return 0;
}

static void write_seen(const char *fqrn, const struct seen *s) {
    char name[256], tmp[300], text[256];
    if (seen_name(fqrn, name, sizeof name) < 0) return;
    snprintf(tmp, sizeof tmp, ".%s.tmp", name);
    int n = snprintf(text, sizeof text, "revision %lld\nroot %s\n%s%s%s", s->revision, s->root,
                     s->history[0] ? "history " : "", s->history, s->history[0] ? "\n" : "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || write_all(fd, (const unsigned char *)text, (size_t)n) < 0 || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, name) < 0) {
        logmsg("warning: cannot record revision %lld in %s/%s: %s", s->revision, opt.cache_dir, name, strerror(errno));
        unlink(tmp);
        return;
    }
    int dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* ---------------------------------------------------------------------------------------- main */
#ifndef CVMFS_MINI_FUZZ
static void usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: " PROG " --url URL [--url URL2 ...] --pubkey master.pub [--tag T | --root-hash H]\n"
            "       [--cache DIR] [--cache-size MB] [--fqrn NAME] [--root-hash-file F] [--min-revision N]\n"
            "       [--retries N] [--timeout S] [--connect-timeout S] [--deadline S] [--proxy SPEC] [--prefetch N]\n"
            "       [--log F] [-f] [-d]\n"
            "       MOUNTPOINT\n"
            "Mount a CernVM-FS repository read-only after checking its whitelist and manifest signatures.\n"
            "URL may list several servers separated by ';' or ','; they are tried in turn.\n"
            "--proxy SPEC: HTTP proxies as in CVMFS_HTTP_PROXY: groups separated by ';' are tried in order,\n"
            "members of a group separated by '|' share the load; DIRECT means no proxy. Without --proxy every\n"
            "request goes DIRECT; with it, only where SPEC says DIRECT. E.g. \"http://squid1:3128|http://squid2:3128;DIRECT\"\n"
            "--timeout: seconds without a byte before a server counts as failed (default 20); --connect-timeout\n"
            "(default 5); --deadline: seconds for one whole request (default 120). A manifest older than the\n"
            "newest one seen before (kept in the cache) is ignored; --min-revision N refuses revisions below N.\n"
            "--prefetch N: N processes (default 4, 0: none) fetch the objects named by the repository's\n"
            ".cvmfsprefetch-<root hash> (a boot's working set, in order) into the cache after mounting.\n");
    exit(code);
}

static void add_servers(const char *list) {
    char *copy = xstrdup(list), *save = NULL;
    for (char *u = strtok_r(copy, ";, ", &save); u; u = strtok_r(NULL, ";, ", &save)) {
        if (opt.nservers == MAX_SERVERS) die("too many servers (at most %d)", MAX_SERVERS);
        opt.servers[opt.nservers++] = xstrdup(u);
    }
    free(copy);
}

/* P made absolute against the current directory (which is about to become the cache directory). */
static char *abs_path(const char *p) {
    if (p[0] == '/') return xstrdup(p);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) die("cannot resolve %s: %s", p, strerror(errno));
    char *r = xmalloc(strlen(cwd) + strlen(p) + 2);
    sprintf(r, "%s/%s", cwd, p);
    return r;
}

static int int_arg(const char *name, const char *v, int min) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < min || x > 1000000) die("%s %s: expected a number >= %d", name, v, min);
    return (int)x;
}

int main(int argc, char **argv) {
    static const struct option lo[] = {
        {"url", required_argument, 0, 'u'},      {"pubkey", required_argument, 0, 'k'},
        {"tag", required_argument, 0, 't'},      {"root-hash", required_argument, 0, 'r'},
        {"cache", required_argument, 0, 'c'},    {"cache-size", required_argument, 0, 's'},
        {"fqrn", required_argument, 0, 'n'},     {"foreground", no_argument, 0, 'f'},
        {"debug", no_argument, 0, 'd'},          {"retries", required_argument, 0, 'R'},
        {"timeout", required_argument, 0, 'T'},  {"root-daemon", no_argument, 0, 'D'},
        {"root-hash-file", required_argument, 0, 'W'}, {"log", required_argument, 0, 'L'},
        {"allow-expired-whitelist", no_argument, 0, 'E'}, {"help", no_argument, 0, 'h'},
        {"connect-timeout", required_argument, 0, 'C'}, {"deadline", required_argument, 0, 'Z'},
        {"min-revision", required_argument, 0, 'M'}, {"proxy", required_argument, 0, 'P'},
        {"prefetch", required_argument, 0, 'p'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "u:k:t:r:c:s:n:fdh", lo, NULL)) != -1) {
        switch (c) {
        case 'u': add_servers(optarg); break;
        case 'k':
            if (opt.npubkeys == MAX_KEYS) die("too many public keys");
            opt.pubkeys[opt.npubkeys++] = abs_path(optarg);
            break;
        case 't': opt.tag = optarg; break;
        case 'r': opt.root_hash = optarg; break;
        case 'c': opt.cache_dir = optarg; break;
        case 's': opt.cache_mb = atol(optarg); break;
        case 'n': opt.fqrn = optarg; break;
        case 'f': opt.foreground = 1; break;
        case 'd': opt.debug = 1; break;
        case 'R': opt.retries = int_arg("--retries", optarg, 0); break;
        case 'T': opt.timeout = int_arg("--timeout", optarg, 1); break;
        case 'C': opt.connect_timeout = int_arg("--connect-timeout", optarg, 1); break;
        case 'Z': opt.deadline = int_arg("--deadline", optarg, 1); break;
        case 'M': {
            long long v;
            if (parse_decimal(optarg, strlen(optarg), &v) < 0) die("--min-revision %s: expected a revision number", optarg);
            opt.min_revision = v;
            break;
        }
        case 'P': opt.proxy = optarg; break;
        case 'p': opt.prefetch = int_arg("--prefetch", optarg, 0); break;
        case 'D': opt.root_daemon = 1; break;
        case 'W': opt.root_hash_file = abs_path(optarg); break;
        case 'L': opt.log_file = abs_path(optarg); break;
        case 'E': opt.allow_expired = 1; break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (optind != argc - 1) usage(2);
    const char *mountpoint = argv[optind];
    if (!opt.nservers) die("no server URL given (--url)");
    if (!opt.npubkeys) die("no master public key given (--pubkey)");
    if (opt.tag && opt.root_hash) die("--tag and --root-hash exclude each other");
    if (opt.root_hash && !is_hex40(opt.root_hash)) die("--root-hash %s is not a 40-digit SHA-1", opt.root_hash);
    if (opt.cache_mb < 1) die("--cache-size must be at least 1 MB");
    cache_limit = (uint64_t)opt.cache_mb << 20;
    if (!opt.cache_dir) opt.cache_dir = "/var/cache/" PROG;
    char mp_abs[4096];
    if (!realpath(mountpoint, mp_abs)) die("mount point %s: %s", mountpoint, strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    load_master_keys(); /* relative key paths are relative to where we were started */

    /* the cache directory becomes the working directory: all object paths are relative to it */
    if (mkdir(opt.cache_dir, 0700) < 0 && errno != EEXIST) die("cannot create cache %s: %s", opt.cache_dir, strerror(errno));
    int cache_fd = open(opt.cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cache_fd < 0 || fchdir(cache_fd) < 0) die("cannot enter cache %s: %s", opt.cache_dir, strerror(errno));
    cache_init();

    for (int i = 0; i < opt.nservers; i++) {
        char err[600];
        if (parse_server(&servers[i], opt.servers[i], err, sizeof err) < 0) die("%s", err);
        if (resolve_server(&servers[i], err, sizeof err) < 0 && opt.nservers == 1) die("%s", err);
    }
    if (opt.proxy) {
        char err[600];
        if (parse_proxy_spec(opt.proxy, strlen(opt.proxy), &proxies, err, sizeof err) < 0)
            die("--proxy %s: %s", opt.proxy, err);
        int resolved = 0;
        for (int i = 0; i < proxies.nproxies; i++) { /* now: after switch_root there is no resolver */
            if (proxies.proxy[i].direct || resolve_server(&proxies.proxy[i], err, sizeof err) == 0) resolved++;
            else logmsg("proxy %s: %s", proxies.proxy[i].url, err);
        }
        if (!resolved) die("--proxy %s: no proxy can be resolved", opt.proxy);
        proxy_init_members();
        DEBUG("proxies: %d in %d groups%s; starting with %s", proxies.nproxies, proxies.ngroups,
              spec_has_direct(&proxies) ? " (DIRECT among them)" : ", never DIRECT", current_proxy()->url);
    }

    struct manifest m;
    unsigned char *mdata = NULL;
    verify_repository(&m, &mdata);
    snprintf(mounted.fqrn, sizeof mounted.fqrn, "%s", m.N);

    /* rollback protection: the newest manifest seen so far wins over an older one served now */
    struct seen prev, newest = {.revision = m.S};
    snprintf(newest.root, sizeof newest.root, "%s", m.C);
    snprintf(newest.history, sizeof newest.history, "%s", m.H);
    int rollback = 0;
    if (read_seen(m.N, &prev) == 0 && prev.revision > m.S) {
        rollback = 1;
        newest = prev;
    }
    if (opt.min_revision && newest.revision < opt.min_revision)
        die("the servers offer revision %lld of %s, older than the minimum revision %lld: refusing to mount (stale "
            "server or replay?)", newest.revision, m.N, opt.min_revision);
    if (!rollback) write_seen(m.N, &newest);

    mounted.revision = newest.revision;
    uint64_t root_size = 0;
    if (opt.root_hash) {
        snprintf(mounted.root_hash, sizeof mounted.root_hash, "%s", opt.root_hash);
        mounted.revision = -1;
    } else if (opt.tag) {
        resolve_tag(m.N, newest.history, mounted.root_hash, sizeof mounted.root_hash, &mounted.revision);
        snprintf(mounted.tag, sizeof mounted.tag, "%s", opt.tag);
    } else {
        snprintf(mounted.root_hash, sizeof mounted.root_hash, "%s", newest.root);
        if (!rollback && m.B > 0) root_size = (uint64_t)m.B;
    }
    if (rollback && !opt.root_hash)
        logmsg("warning: the servers offer revision %lld of %s, but revision %lld was seen before (stale server or "
               "replay): ignoring the older manifest, keeping revision %lld", m.S, m.N, prev.revision, prev.revision);
    free(mdata);
    root_catalog = open_catalog(mounted.root_hash, "", root_size);
    if (!root_catalog) die("cannot load the root catalog %s of %s", mounted.root_hash, m.N);
    struct entry rootent;
    if (lookup("/", &rootent) < 0 || !S_ISDIR(rootent.mode)) die("root catalog %s has no root directory", mounted.root_hash);
    entry_free(&rootent);
    if (opt.root_hash_file) {
        char tmpn[4200];
        snprintf(tmpn, sizeof tmpn, "%s.tmp", opt.root_hash_file);
        FILE *f = fopen(tmpn, "w");
        if (!f || fprintf(f, "%s\n", mounted.root_hash) < 0 || fclose(f) != 0 || rename(tmpn, opt.root_hash_file) < 0)
            die("cannot write %s: %s", opt.root_hash_file, strerror(errno));
    }

    /* mount */
    char fsname[400];
    snprintf(fsname, sizeof fsname, "ro,allow_other,default_permissions,suid,dev,fsname=cvmfs:%s,subtype=" PROG,
             mounted.fqrn);
    char *fargv[] = {argv[0], "-o", fsname, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse *fuse = fuse_new(&args, &ops, sizeof ops, NULL);
    if (!fuse) die("cannot set up FUSE");
    if (fuse_mount(fuse, mp_abs) != 0) die("cannot mount on %s (is the fuse module loaded and /dev/fuse present?)", mp_abs);
    logmsg("mounted %s revision %lld%s%s (root catalog %s) on %s", mounted.fqrn, mounted.revision,
           mounted.tag[0] ? " tag " : "", mounted.tag, mounted.root_hash, mp_abs);
    if (!opt.foreground) {
        pid_t pid = fork();
        if (pid < 0) {
            fuse_unmount(fuse);
            die("fork: %s", strerror(errno));
        }
        if (pid > 0) _exit(0);
        setsid();
        /* a daemon must not hold its parent's pipes open: stdio to /dev/null, stderr to --log */
        int nul = open("/dev/null", O_RDWR);
        int lf = opt.log_file ? open(opt.log_file, O_WRONLY | O_CREAT | O_APPEND | O_NOCTTY | O_CLOEXEC, 0644) : -1;
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(lf >= 0 ? lf : nul, 2);
            close(nul);
        }
        if (lf >= 0) close(lf);
        if (fchdir(cache_fd) < 0) _exit(1);
    }
    mount_up = 1; /* from here on: EIO and a log line, never die() */
    if (opt.root_daemon) argv[0][0] = '@'; /* systemd spares "@" processes when it kills everything */
    struct fuse_session *se = fuse_get_session(fuse);
    prefetch_start(fuse_session_fd(se), mounted.root_hash);
    fuse_set_signal_handlers(se);
    int rc = fuse_loop(fuse);
    fuse_remove_signal_handlers(se);
    fuse_unmount(fuse);
    fuse_destroy(fuse);
    return rc ? 1 : 0;
}
#endif /* CVMFS_MINI_FUZZ */
