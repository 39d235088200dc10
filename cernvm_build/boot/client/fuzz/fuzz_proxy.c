/* The --proxy list (CVMFS_HTTP_PROXY syntax: ';' groups, '|' members, DIRECT): whatever the bytes, the
 * parser either refuses with a message or yields groups that are non-empty, in bounds and well formed;
 * then the failover rotation (member within a group, then the next group) stays in bounds. Input: the
 * specification itself. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct proxy_spec ps;
    char err[600];
    if (parse_proxy_spec((const char *)data, size, &ps, err, sizeof err) < 0) {
        if (!err[0] || ps.nproxies || ps.ngroups) abort(); /* refused: a reason, nothing kept */
        return 0;
    }
    if (ps.ngroups < 1 || ps.ngroups > MAX_PROXY_GROUPS || ps.nproxies < ps.ngroups || ps.nproxies > MAX_PROXIES)
        abort();
    if (ps.first[0] != 0 || ps.first[ps.ngroups] != ps.nproxies) abort();
    for (int g = 0; g < ps.ngroups; g++)
        if (ps.first[g + 1] <= ps.first[g]) abort(); /* every group has a member */
    for (int i = 0; i < ps.nproxies; i++) {
        const struct server *p = &ps.proxy[i];
        if (!p->url || !p->path || p->path[0] || p->fd != -1) abort();
        if (p->direct ? strcmp(p->url, "DIRECT") != 0 : (!p->host[0] || !p->port[0] || strncmp(p->url, "http://", 7)))
            abort();
    }
    /* the rotation the client does on proxy failures, on this list */
    proxies = ps;
    proxy_group = 0;
    for (int g = 0; g < ps.ngroups; g++) proxy_member[g] = (int)(size % (size_t)(ps.first[g + 1] - ps.first[g]));
    int burned = 0;
    static int devnull = -1, saved = -1; /* the switches log one line each: not to the fuzzer's stderr */
    if (devnull < 0) devnull = open("/dev/null", O_WRONLY), saved = dup(2);
    fflush(stderr);
    dup2(devnull, 2);
    for (int k = 0; k < 2 * ps.nproxies; k++) {
        struct server *cur = current_proxy();
        if (cur < &proxies.proxy[0] || cur >= &proxies.proxy[proxies.nproxies]) abort();
        if (cur < &proxies.proxy[proxies.first[proxy_group]] || cur >= &proxies.proxy[proxies.first[proxy_group + 1]])
            abort();
        proxy_switch(&burned);
    }
    fflush(stderr);
    dup2(saved, 2);
    memset(&proxies, 0, sizeof proxies);
    proxy_spec_free(&ps);
    return 0;
}
