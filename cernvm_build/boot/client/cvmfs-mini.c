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

/* ------------------------------------------------------------------------------------ options */
static struct {
    char *servers[MAX_SERVERS];
    int nservers;
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
    int timeout;
    int root_daemon;
    char *root_hash_file;
    char *log_file;
    int allow_expired;
} opt = {.cache_mb = 1024, .retries = 3, .timeout = 20};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": error: ");
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
static void buf_free(struct buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
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
};
static struct server servers[MAX_SERVERS];
static int preferred_server;
static uint64_t stat_rx_bytes, stat_objects;

static void parse_server(struct server *s, const char *url) {
    s->url = xstrdup(url);
    s->fd = -1;
    if (strncmp(url, "http://", 7) != 0) die("server URL %s: only http:// is supported", url);
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= sizeof s->host) die("server URL %s has no host", url);
    memcpy(s->host, h, hl);
    s->host[hl] = 0;
    strcpy(s->port, "80");
    char *colon = strrchr(s->host, ':');
    if (colon && !strchr(colon, ']')) {
        snprintf(s->port, sizeof s->port, "%s", colon + 1);
        *colon = 0;
    }
    if (s->host[0] == '[') { /* [v6] */
        memmove(s->host, s->host + 1, strlen(s->host));
        char *e = strchr(s->host, ']');
        if (e) *e = 0;
    }
    s->path = xstrdup(slash ? slash : "");
    size_t pl = strlen(s->path);
    while (pl && s->path[pl - 1] == '/') s->path[--pl] = 0;
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

static int tcp_connect(struct server *s, char *err, size_t errlen) {
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
    int r = poll(&p, 1, opt.timeout * 1000);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        snprintf(err, errlen, "cannot connect to %s:%s: %s", s->host, s->port,
                 r == 0 ? "timed out" : strerror(soerr ? soerr : errno));
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = opt.timeout};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* buffered reader over the socket */
struct rd {
    int fd;
    unsigned char buf[65536];
    size_t pos, len;
    int eof;
};
static int rd_fill(struct rd *r) {
    if (r->pos < r->len) return 1;
    ssize_t n = recv(r->fd, r->buf, sizeof r->buf, 0);
    if (n < 0) return -1;
    if (n == 0) {
        r->eof = 1;
        return 0;
    }
    stat_rx_bytes += (uint64_t)n;
    r->pos = 0;
    r->len = (size_t)n;
    return 1;
}
static int rd_line(struct rd *r, char *line, size_t cap) { /* 1 ok, 0 eof, -1 error */
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
        line[n++] = (char)c;
    }
}
static int rd_bytes(struct rd *r, struct buf *out, size_t n) {
    while (n) {
        int f = rd_fill(r);
        if (f <= 0) return -1;
        size_t k = r->len - r->pos;
        if (k > n) k = n;
        buf_add(out, r->buf + r->pos, k);
        r->pos += k;
        n -= k;
    }
    return 0;
}

/* One GET on one server. Returns the HTTP status (200 with OUT filled), or -1 with ERR set. */
static int http_get_once(struct server *s, const char *rel, struct buf *out, char *err, size_t errlen) {
    if (resolve_server(s, err, errlen) < 0) return -1;
    int reused = s->fd >= 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (s->fd < 0) {
            s->fd = tcp_connect(s, err, errlen);
            if (s->fd < 0) return -1;
            reused = 0;
        }
        char req[4096];
        int n = snprintf(req, sizeof req,
                         "GET %s/%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: " PROG "/1\r\n"
                         "Accept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n",
                         s->path, rel, s->host, s->port);
        if (n >= (int)sizeof req) {
            snprintf(err, errlen, "URL too long");
            return -1;
        }
        struct rd *r = xmalloc(sizeof *r);
        r->fd = s->fd;
        r->pos = r->len = 0;
        r->eof = 0;
        char line[8192];
        int status = -1, lr;
        if (send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n || (lr = rd_line(r, line, sizeof line)) <= 0) {
            snprintf(err, errlen, "GET %s%s/%s: %s", s->url, "", rel,
                     errno == EAGAIN ? "timed out" : "connection closed");
            free(r);
            close(s->fd);
            s->fd = -1;
            if (reused) continue; /* stale keep-alive connection: once more on a fresh one */
            return -1;
        }
        int minor = 0;
        if (sscanf(line, "HTTP/1.%d %d", &minor, &status) != 2) {
            snprintf(err, errlen, "GET %s/%s: malformed status line", s->url, rel);
            goto fail;
        }
        long long clen = -1;
        int chunked = 0, keep = minor >= 1;
        for (;;) {
            if (rd_line(r, line, sizeof line) <= 0) {
                snprintf(err, errlen, "GET %s/%s: truncated headers", s->url, rel);
                goto fail;
            }
            if (!line[0]) break;
            if (!strncasecmp(line, "Content-Length:", 15)) clen = atoll(line + 15);
            else if (!strncasecmp(line, "Transfer-Encoding:", 18) && strcasestr(line, "chunked")) chunked = 1;
            else if (!strncasecmp(line, "Connection:", 11)) {
                if (strcasestr(line, "close")) keep = 0;
                else if (strcasestr(line, "keep-alive")) keep = 1;
            } else if (!strncasecmp(line, "Content-Encoding:", 17) && !strcasestr(line, "identity")) {
                snprintf(err, errlen, "GET %s/%s: server applied a content encoding", s->url, rel);
                goto fail;
            }
        }
        out->len = 0;
        if (chunked) {
            for (;;) {
                if (rd_line(r, line, sizeof line) <= 0) goto trunc;
                size_t cl = strtoul(line, NULL, 16);
                if (cl == 0) {
                    while (rd_line(r, line, sizeof line) > 0 && line[0]) {}
                    break;
                }
                if (rd_bytes(r, out, cl) < 0 || rd_line(r, line, sizeof line) <= 0) goto trunc;
            }
        } else if (clen >= 0) {
            if (rd_bytes(r, out, (size_t)clen) < 0) goto trunc;
        } else {
            keep = 0;
            for (;;) {
                int f = rd_fill(r);
                if (f < 0) goto trunc;
                if (f == 0) break;
                buf_add(out, r->buf + r->pos, r->len - r->pos);
                r->pos = r->len;
            }
        }
        if (!keep) {
            close(s->fd);
            s->fd = -1;
        }
        free(r);
        if (status != 200) snprintf(err, errlen, "GET %s/%s: HTTP %d", s->url, rel, status);
        return status;
    trunc:
        snprintf(err, errlen, "GET %s/%s: transfer interrupted", s->url, rel);
    fail:
        free(r);
        close(s->fd);
        s->fd = -1;
        return -1;
    }
    return -1;
}

/* GET REL from the servers in turn, with retries and back-off. 0 ok, -ENOENT (404 everywhere), -EIO. */
static int http_get(const char *rel, struct buf *out, char *err, size_t errlen) {
    int all404 = 1;
    for (int attempt = 0; attempt <= opt.retries; attempt++) {
        if (attempt) {
            unsigned delay = 1u << (attempt - 1);
            DEBUG("retrying %s in %u s: %s", rel, delay, err);
            sleep(delay > 8 ? 8 : delay);
        }
        for (int k = 0; k < opt.nservers; k++) {
            int i = (preferred_server + k) % opt.nservers;
            int st = http_get_once(&servers[i], rel, out, err, errlen);
            if (st == 200) {
                preferred_server = i;
                stat_objects++;
                DEBUG("fetched %s from %s (%zu bytes)", rel, servers[i].url, out->len);
                return 0;
            }
            if (st != 404) all404 = 0;
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
        e = xmalloc(sizeof *e);
        memset(e, 0, sizeof *e);
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
            char p[96];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", d, de->d_name);
            if (!strncmp(de->d_name, ".tmp", 4)) { /* leftover of an interrupted download */
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

/* Make object HEX+SUFFIX present in the cache, decompressed (unless RAW). Writes its relative path
 * to PATH. 0 ok, -EIO on any failure (message logged: corruption is worth a line on the console). */
static int fetch_object(const char *hex, char suffix, int raw, char *path, size_t pathlen, int pin) {
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
    char err[512] = "";
    struct buf b = {0};
    int rc = http_get(path, &b, err, sizeof err);
    if (rc < 0) {
        logmsg("cannot fetch object %s: %s", path, err);
        buf_free(&b);
        return -EIO;
    }
    char got[41];
    sha1_hex(b.data, b.len, got);
    if (strcmp(got, hex) != 0) {
        logmsg("object %s is corrupted: its SHA-1 is %s, expected %s; refused", path, got, hex);
        buf_free(&b);
        return -EIO;
    }
    /* The temporary file lives in the object's own directory: a rename within one directory takes
     * only that directory's lock. A cross-directory rename would take the file system's rename
     * mutex, which overlayfs (6.1) holds while it copies a file up from this very mount when the
     * cache shares a file system with the overlay's upper layer (scratch disk, tmpfs): deadlock. */
    char tmp[96];
    snprintf(tmp, sizeof tmp, "data/%.2s/.tmpXXXXXX", name);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        logmsg("cache %s: cannot create a file: %s", opt.cache_dir, strerror(errno));
        buf_free(&b);
        return -EIO;
    }
    uint64_t size = 0;
    int ok = 1;
    if (raw) {
        ok = write(fd, b.data, b.len) == (ssize_t)b.len;
        size = b.len;
    } else {
        z_stream z = {0};
        unsigned char outb[65536];
        if (inflateInit(&z) != Z_OK) ok = 0;
        z.next_in = b.data;
        z.avail_in = (uInt)b.len;
        int zr = Z_OK;
        while (ok && zr != Z_STREAM_END) {
            z.next_out = outb;
            z.avail_out = sizeof outb;
            zr = inflate(&z, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END) {
                logmsg("object %s is not a valid zlib stream; refused", path);
                ok = 0;
                break;
            }
            size_t have = sizeof outb - z.avail_out;
            if (have && write(fd, outb, have) != (ssize_t)have) {
                logmsg("cache %s: write failed: %s", opt.cache_dir, strerror(errno));
                ok = 0;
            }
            size += have;
            if (zr != Z_STREAM_END && z.avail_in == 0 && have == 0) {
                logmsg("object %s is a truncated zlib stream; refused", path);
                ok = 0;
            }
        }
        inflateEnd(&z);
    }
    buf_free(&b);
    close(fd);
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -EIO;
    }
    e = cache_add(name, size, 0);
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

static struct catalog *open_catalog(const char *hex, const char *expect_prefix) {
    if (!is_hex40(hex)) {
        logmsg("catalog hash %s is not a SHA-1 (other algorithms are not supported)", hex);
        return NULL;
    }
    char path[128];
    if (fetch_object(hex, 'C', 0, path, sizeof path, 1) < 0) return NULL;
    struct catalog *c = xmalloc(sizeof *c);
    memset(c, 0, sizeof *c);
    snprintf(c->hash, sizeof c->hash, "%s", hex);
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s?immutable=1", path);
    if (sqlite3_open_v2(uri, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        logmsg("catalog %s: cannot open: %s", hex, sqlite3_errmsg(c->db));
        goto fail;
    }
    /* properties: schema and root prefix */
    sqlite3_stmt *st;
    c->prefix = xstrdup("");
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
            c->prefix = xstrdup(v);
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
    if (sqlite3_prepare_v2(c->db, "SELECT path, sha1 FROM nested_catalogs ORDER BY path", -1, &st, NULL) != SQLITE_OK)
        goto sqlfail;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(st, 0), *h = (const char *)sqlite3_column_text(st, 1);
        if (!p || !h) continue;
        c->nested = xrealloc(c->nested, (size_t)(c->nnested + 1) * sizeof *c->nested);
        struct nested_ref *n = &c->nested[c->nnested++];
        n->path = xstrdup(p);
        n->len = strlen(p);
        snprintf(n->hash, sizeof n->hash, "%s", h);
        n->cat = NULL;
    }
    sqlite3_finalize(st);
    c->id = ncatalogs;
    catalogs = xrealloc(catalogs, (size_t)(ncatalogs + 1) * sizeof *catalogs);
    catalogs[ncatalogs++] = c;
    DEBUG("opened catalog %s for '%s' (%d nested)", hex, c->prefix, c->nnested);
    return c;
sqlfail:
    logmsg("catalog %s is not a valid catalog database: %s", hex, sqlite3_errmsg(c->db));
fail:
    if (c->db) sqlite3_close(c->db);
    free(c->prefix);
    free(c);
    return NULL;
}

/* The catalog holding PATH ("" = root), descending (and fetching) nested catalogs on the way. */
static struct catalog *catalog_for(const char *path) {
    struct catalog *c = root_catalog;
    for (;;) {
        struct nested_ref *hit = NULL;
        for (int i = 0; i < c->nnested; i++) {
            struct nested_ref *n = &c->nested[i];
            if (!strncmp(path, n->path, n->len) && (path[n->len] == 0 || path[n->len] == '/')) {
                hit = n;
                break;
            }
        }
        if (!hit) return c;
        if (!hit->cat) {
            hit->cat = open_catalog(hit->hash, hit->path);
            if (!hit->cat) return NULL;
        }
        c = hit->cat;
    }
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
    int64_t rowid = sqlite3_column_int64(st, 0);
    uint64_t hl = (uint64_t)sqlite3_column_int64(st, 1);
    const void *h = sqlite3_column_blob(st, 2);
    int hlen = sqlite3_column_bytes(st, 2);
    e->size = (uint64_t)sqlite3_column_int64(st, 3);
    e->mode = (mode_t)sqlite3_column_int64(st, 4);
    e->mtime = sqlite3_column_int64(st, 5);
    e->mtimens = (long)sqlite3_column_int64(st, 6);
    e->flags = (unsigned)sqlite3_column_int64(st, 7);
    const char *sl = (const char *)sqlite3_column_text(st, 9);
    e->uid = (uid_t)sqlite3_column_int64(st, 10);
    e->gid = (gid_t)sqlite3_column_int64(st, 11);
    const void *x = sqlite3_column_blob(st, 12);
    int xlen = sqlite3_column_bytes(st, 12);
    e->linkcount = (unsigned)(hl & 0xffffffffu);
    unsigned group = (unsigned)(hl >> 32);
    if (!e->linkcount) e->linkcount = 1;
    e->cat = c;
    e->ino = make_ino(c, rowid, group);
    if (h && hlen == 20) {
        for (int i = 0; i < 20; i++) sprintf(e->hash + 2 * i, "%02x", ((const unsigned char *)h)[i]);
        e->has_hash = 1;
    }
    if (sl && *sl) e->symlink = xstrdup(sl);
    if (x && xlen > 0) {
        e->xattr = xmalloc((size_t)xlen);
        memcpy(e->xattr, x, (size_t)xlen);
        e->xattr_len = xlen;
    }
    sqlite3_reset(st);
    if (e->flags & F_EXTERNAL) {
        entry_free(e);
        return -EIO;
    }
    return 0;
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
    st->st_blocks = (st->st_size + 511) / 512;
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
    snprintf(out, size, "%s", e.symlink ? e.symlink : "");
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
    char hash[41];
    int fd;
};
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
        h = xmalloc(sizeof *h + (size_t)cap * sizeof(struct piece));
        sqlite3_stmt *st = e.cat->st_chunks;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, e.md5a);
        sqlite3_bind_int64(st, 2, e.md5b);
        uint64_t expect = 0;
        int bad = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (n == cap) h = xrealloc(h, sizeof *h + (size_t)(cap *= 2) * sizeof(struct piece));
            struct piece *p = &h->pieces[n++];
            p->offset = (uint64_t)sqlite3_column_int64(st, 0);
            p->size = (uint64_t)sqlite3_column_int64(st, 1);
            const unsigned char *hb = sqlite3_column_blob(st, 2);
            p->fd = -1;
            if (!hb || sqlite3_column_bytes(st, 2) != 20 || p->offset != expect) bad = 1;
            else for (int i = 0; i < 20; i++) sprintf(p->hash + 2 * i, "%02x", hb[i]);
            expect += p->size;
        }
        sqlite3_reset(st);
        if (bad || expect != e.size) {
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
        h = xmalloc(sizeof *h + sizeof(struct piece));
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
}

static int piece_fd(struct fh *h, struct piece *p) {
    if (p->fd >= 0) return p->fd;
    char path[128];
    if (fetch_object(p->hash, h->suffix, h->raw, path, sizeof path, 0) < 0) return -EIO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -EIO;
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != p->size) {
        logmsg("object %s has %lld bytes, the catalog says %llu; refused", path, (long long)st.st_size,
               (unsigned long long)p->size);
        close(fd);
        unlink(path);
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
        if (pos >= p->offset + p->size || pos < p->offset) continue;
        int fd = piece_fd(h, p);
        if (fd < 0) return fd;
        size_t want = size - done;
        if (want > p->offset + p->size - pos) want = (size_t)(p->offset + p->size - pos);
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
    return -1;
}

static int op_getxattr(const char *path, const char *name, char *value, size_t size) {
    struct entry e;
    int rc = lookup(path, &e);
    if (rc < 0) return rc;
    int found = -ENODATA;
    const unsigned char *x = e.xattr;
    if (x && e.xattr_len >= 2 && x[0] == 1) {
        int n = x[1], pos = 2;
        size_t nl = strlen(name);
        for (int i = 0; i < n && pos + 2 <= e.xattr_len; i++) {
            int kl = x[pos], vl = x[pos + 1];
            pos += 2;
            if (pos + kl + vl > e.xattr_len) break;
            if ((size_t)kl == nl && !memcmp(x + pos, name, nl)) {
                if (size == 0) found = vl;
                else if ((size_t)vl > size) found = -ERANGE;
                else {
                    memcpy(value, x + pos + kl, (size_t)vl);
                    found = vl;
                }
                break;
            }
            pos += kl + vl;
        }
    }
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
    size_t total = 0;
    const unsigned char *x = e.xattr;
    if (x && e.xattr_len >= 2 && x[0] == 1) {
        int n = x[1], pos = 2;
        for (int i = 0; i < n && pos + 2 <= e.xattr_len; i++) {
            int kl = x[pos], vl = x[pos + 1];
            pos += 2;
            if (pos + kl + vl > e.xattr_len) break;
            if (size) {
                if (total + (size_t)kl + 1 > size) {
                    entry_free(&e);
                    return -ERANGE;
                }
                memcpy(list + total, x + pos, (size_t)kl);
                list[total + (size_t)kl] = 0;
            }
            total += (size_t)kl + 1;
            pos += kl + vl;
        }
    }
    entry_free(&e);
    return (int)total;
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
/* split "payload--\nhexdigest\nsignature" */
static int split_letter(struct buf *b, size_t *payload_len, char digest[64], const unsigned char **sig,
                        size_t *siglen) {
    const unsigned char *d = b->data;
    size_t pos;
    if (b->len >= 3 && !memcmp(d, "--\n", 3)) pos = 0;
    else {
        const unsigned char *m = memmem(d, b->len, "\n--\n", 4);
        if (!m) return -1;
        pos = (size_t)(m - d) + 1;
    }
    *payload_len = pos;
    const unsigned char *rest = d + pos + 3;
    size_t restlen = b->len - pos - 3;
    const unsigned char *nl = memchr(rest, '\n', restlen);
    if (!nl || nl - rest >= 64) return -1;
    memcpy(digest, rest, (size_t)(nl - rest));
    digest[nl - rest] = 0;
    *sig = nl + 1;
    *siglen = restlen - (size_t)(nl - rest) - 1;
    return 0;
}

static time_t parse_ts(const char *s) {
    struct tm tm = {0};
    if (strlen(s) < 14) return -1;
    for (int i = 0; i < 14; i++)
        if (s[i] < '0' || s[i] > '9') return -1;
    char t[15];
    memcpy(t, s, 14);
    t[14] = 0;
    if (sscanf(t, "%4d%2d%2d%2d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
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

struct manifest {
    char C[48], X[48], H[48], N[256], R[48];
    long long S;
    int haveS;
};

static void fetch_letter(const char *name, struct buf *b) {
    char err[512];
    int rc = http_get(name, b, err, sizeof err);
    if (rc == -ENOENT) die("%s is missing from %s (HTTP 404): not a CernVM-FS repository", name, servers[0].url);
    if (rc < 0) die("cannot fetch %s: %s", name, err);
}

static void verify_repository(struct manifest *m) {
    /* manifest */
    struct buf mb = {0}, wb = {0}, cb = {0};
    fetch_letter(".cvmfspublished", &mb);
    size_t plen, siglen;
    char digest[64];
    const unsigned char *sig;
    if (split_letter(&mb, &plen, digest, &sig, &siglen) < 0) die(".cvmfspublished has no signature block");
    memset(m, 0, sizeof *m);
    char *payload = xmalloc(plen + 1);
    memcpy(payload, mb.data, plen);
    payload[plen] = 0;
    for (char *line = strtok(payload, "\n"); line; line = strtok(NULL, "\n")) {
        char k = line[0];
        const char *v = line + 1;
        if (k == 'C') snprintf(m->C, sizeof m->C, "%s", v);
        else if (k == 'X') snprintf(m->X, sizeof m->X, "%s", v);
        else if (k == 'H') snprintf(m->H, sizeof m->H, "%s", v);
        else if (k == 'N') snprintf(m->N, sizeof m->N, "%s", v);
        else if (k == 'R') snprintf(m->R, sizeof m->R, "%s", v);
        else if (k == 'S') { m->S = atoll(v); m->haveS = 1; }
    }
    free(payload);
    if (!m->C[0] || !m->R[0] || !m->haveS) die(".cvmfspublished lacks a required field (C, R, S)");
    if (strcmp(m->R, "d41d8cd98f00b204e9800998ecf8427e") != 0) die(".cvmfspublished has a wrong root path hash");
    if (!m->X[0]) die(".cvmfspublished names no certificate (X)");
    if (opt.fqrn && strcmp(opt.fqrn, m->N) != 0)
        die("the server publishes repository '%s', not '%s'", m->N, opt.fqrn);

    /* certificate */
    char certpath[128];
    if (!is_hex40(m->X)) die("certificate hash %s is not a SHA-1", m->X);
    if (fetch_object(m->X, 'X', 0, certpath, sizeof certpath, 1) < 0) die("cannot fetch the repository certificate");
    FILE *cf = fopen(certpath, "r");
    X509 *cert = cf ? PEM_read_X509_AUX(cf, NULL, NULL, NULL) : NULL;
    if (cf) fclose(cf);
    if (!cert) die("the repository certificate (%s) is not a PEM X.509 certificate", m->X);

    /* whitelist: digest, name, expiry, master key, fingerprint */
    fetch_letter(".cvmfswhitelist", &wb);
    size_t wplen, wsiglen;
    char wdigest[64];
    const unsigned char *wsig;
    if (split_letter(&wb, &wplen, wdigest, &wsig, &wsiglen) < 0) die(".cvmfswhitelist has no signature block");
    char got[41];
    sha1_hex(wb.data, wplen, got);
    if (strcmp(got, wdigest) != 0) die(".cvmfswhitelist was modified: its content does not match its signed digest");
    int signed_ok = 0;
    for (int i = 0; i < opt.npubkeys && !signed_ok; i++) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(master_keys[i], NULL);
        unsigned char rec[1024];
        size_t rl = sizeof rec;
        if (ctx && EVP_PKEY_verify_recover_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_verify_recover(ctx, rec, &rl, wsig, wsiglen) > 0 && rl == strlen(wdigest) &&
            !memcmp(rec, wdigest, rl))
            signed_ok = 1;
        EVP_PKEY_CTX_free(ctx);
    }
    char *wl = xmalloc(wplen + 1);
    memcpy(wl, wb.data, wplen);
    wl[wplen] = 0;
    char *save = NULL;
    char *l1 = strtok_r(wl, "\n", &save), *l2 = strtok_r(NULL, "\n", &save), *l3 = strtok_r(NULL, "\n", &save);
    if (!l1 || !l2 || !l3 || strlen(l1) != 14 || l2[0] != 'E' || l3[0] != 'N')
        die(".cvmfswhitelist is malformed (expected timestamp, E<expiry>, N<name> lines)");
    if (!signed_ok)
        die(".cvmfswhitelist of %s is not signed by the given master key%s (%s): refusing to mount", l3 + 1,
            opt.npubkeys > 1 ? "s" : "", opt.pubkeys[0]);
    if (strcmp(l3 + 1, m->N) != 0) die(".cvmfswhitelist is for repository '%s', not '%s'", l3 + 1, m->N);
    time_t expires = parse_ts(l2 + 1);
    if (expires < 0) die(".cvmfswhitelist has a malformed expiry '%s'", l2 + 1);
    time_t now = time(NULL);
    if (now / 3600 >= expires / 3600 && !opt.allow_expired) {
        char when[64];
        struct tm tm;
        gmtime_r(&expires, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        die(".cvmfswhitelist of %s expired on %s (check the clock or re-sign the whitelist)", m->N, when);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdn = 0;
    X509_digest(cert, EVP_sha1(), md, &mdn);
    char fp[128] = "";
    for (unsigned i = 0; i < mdn; i++) sprintf(fp + strlen(fp), i ? ":%02X" : "%02X", md[i]);
    int listed = 0;
    for (char *line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t tl = strcspn(line, " \t#");
        if (tl == strlen(fp) && !strncmp(line, fp, tl)) listed = 1;
    }
    free(wl);
    if (!listed) die("the repository certificate %s is not on the whitelist of %s", fp, m->N);

    /* manifest signature with the certificate */
    sha1_hex(mb.data, plen, got);
    if (strcmp(got, digest) != 0) die(".cvmfspublished was modified: its content does not match its signed digest");
    EVP_PKEY *ck = X509_get0_pubkey(cert);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int ok = ck && EVP_DigestVerifyInit(mctx, NULL, EVP_sha1(), NULL, ck) > 0 &&
             EVP_DigestVerify(mctx, sig, siglen, (const unsigned char *)digest, strlen(digest)) == 1;
    EVP_MD_CTX_free(mctx);
    X509_free(cert);
    if (!ok) die(".cvmfspublished: signature does not verify with the repository certificate");
    buf_free(&mb);
    buf_free(&wb);
    buf_free(&cb);
}

static void resolve_tag(const struct manifest *m, char *hash, size_t hlen, long long *revision) {
    if (!m->H[0]) die("repository %s has no history database, so no tag '%s'", m->N, opt.tag);
    char path[128];
    if (!is_hex40(m->H) || fetch_object(m->H, 'H', 0, path, sizeof path, 1) < 0)
        die("cannot fetch the history database of %s", m->N);
    sqlite3 *db;
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s?immutable=1", path);
    sqlite3_stmt *st;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT hash, revision FROM tags WHERE name=?", -1, &st, NULL) != SQLITE_OK)
        die("history database of %s is not readable: %s", m->N, sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, opt.tag, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        struct buf names = {0};
        if (sqlite3_prepare_v2(db, "SELECT name FROM tags ORDER BY name", -1, &st, NULL) == SQLITE_OK) {
            while (sqlite3_step(st) == SQLITE_ROW) {
                if (names.len) buf_add(&names, ", ", 2);
                const char *n = (const char *)sqlite3_column_text(st, 0);
                buf_add(&names, n, strlen(n));
            }
            sqlite3_finalize(st);
        }
        die("repository %s has no tag '%s' (known: %s)", m->N, opt.tag, names.len ? (char *)names.data : "none");
    }
    snprintf(hash, hlen, "%s", (const char *)sqlite3_column_text(st, 0));
    *revision = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---------------------------------------------------------------------------------------- main */
static void usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: " PROG " --url URL [--url URL2 ...] --pubkey master.pub [--tag T | --root-hash H]\n"
            "       [--cache DIR] [--cache-size MB] [--fqrn NAME] [--root-hash-file F] [-f] [-d] MOUNTPOINT\n"
            "Mount a CernVM-FS repository read-only after checking its whitelist and manifest signatures.\n"
            "URL may list several servers separated by ';' or ','; they are tried in turn.\n");
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
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "u:k:t:r:c:s:n:fdh", lo, NULL)) != -1) {
        switch (c) {
        case 'u': add_servers(optarg); break;
        case 'k':
            if (opt.npubkeys == MAX_KEYS) die("too many public keys");
            opt.pubkeys[opt.npubkeys++] = optarg;
            break;
        case 't': opt.tag = optarg; break;
        case 'r': opt.root_hash = optarg; break;
        case 'c': opt.cache_dir = optarg; break;
        case 's': opt.cache_mb = atol(optarg); break;
        case 'n': opt.fqrn = optarg; break;
        case 'f': opt.foreground = 1; break;
        case 'd': opt.debug = 1; break;
        case 'R': opt.retries = atoi(optarg); break;
        case 'T': opt.timeout = atoi(optarg); break;
        case 'D': opt.root_daemon = 1; break;
        case 'W': opt.root_hash_file = optarg; break;
        case 'L': opt.log_file = optarg; break;
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

    /* the cache directory becomes the working directory: all object paths are relative to it */
    if (mkdir(opt.cache_dir, 0700) < 0 && errno != EEXIST) die("cannot create cache %s: %s", opt.cache_dir, strerror(errno));
    int cache_fd = open(opt.cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cache_fd < 0 || fchdir(cache_fd) < 0) die("cannot enter cache %s: %s", opt.cache_dir, strerror(errno));
    cache_init();

    for (int i = 0; i < opt.nservers; i++) {
        parse_server(&servers[i], opt.servers[i]);
        char err[300];
        if (resolve_server(&servers[i], err, sizeof err) < 0 && opt.nservers == 1) die("%s", err);
    }
    load_master_keys();

    struct manifest m;
    verify_repository(&m);
    snprintf(mounted.fqrn, sizeof mounted.fqrn, "%s", m.N);
    mounted.revision = m.S;
    if (opt.root_hash) {
        snprintf(mounted.root_hash, sizeof mounted.root_hash, "%s", opt.root_hash);
        mounted.revision = -1;
    } else if (opt.tag) {
        resolve_tag(&m, mounted.root_hash, sizeof mounted.root_hash, &mounted.revision);
        snprintf(mounted.tag, sizeof mounted.tag, "%s", opt.tag);
    } else {
        snprintf(mounted.root_hash, sizeof mounted.root_hash, "%s", m.C);
    }
    root_catalog = open_catalog(mounted.root_hash, "");
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
        if (pid < 0) die("fork: %s", strerror(errno));
        if (pid > 0) _exit(0);
        setsid();
        /* a daemon must not hold its parent's pipes open: stdio to /dev/null, stderr to --log */
        int nul = open("/dev/null", O_RDWR);
        int lf = opt.log_file ? open(opt.log_file, O_WRONLY | O_CREAT | O_APPEND | O_NOCTTY, 0644) : -1;
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(lf >= 0 ? lf : nul, 2);
            close(nul);
        }
        if (lf >= 0) close(lf);
        if (fchdir(cache_fd) < 0) _exit(1);
    }
    if (opt.root_daemon) argv[0][0] = '@'; /* systemd spares "@" processes when it kills everything */
    struct fuse_session *se = fuse_get_session(fuse);
    fuse_set_signal_handlers(se);
    int rc = fuse_loop(fuse);
    fuse_remove_signal_handlers(se);
    fuse_unmount(fuse);
    fuse_destroy(fuse);
    return rc ? 1 : 0;
}
