/* Catalog rows as SQLite hands them out -> entry -> stat; the xattr blob (get and list with every
 * buffer size); chunk lists (piece decoding, coverage check, then reads across the pieces' offsets).
 * Input: 9 little-endian u64 columns, u8 hash length + hash, u8 symlink length + symlink, u8 xattr
 * length + xattr, then 17-byte chunk rows (offset u64, size u64, u8 has-hash). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p = data;
    size_t left = size;
    struct row r;
    memset(&r, 0, sizeof r);
    r.rowid = (int64_t)take_u64(&p, &left);
    r.hardlinks = take_u64(&p, &left);
    r.size = (int64_t)take_u64(&p, &left);
    r.mode = (int64_t)take_u64(&p, &left);
    r.mtime = (int64_t)take_u64(&p, &left);
    r.mtimens = (int64_t)take_u64(&p, &left);
    r.flags = (int64_t)take_u64(&p, &left);
    r.uid = (int64_t)take_u64(&p, &left);
    r.gid = (int64_t)take_u64(&p, &left);
    unsigned char hash[255], xattr[255];
    char symlink[256];
    r.hashlen = (int)take_u8(&p, &left);
    take(&p, &left, hash, (size_t)r.hashlen);
    r.hash = hash;
    unsigned sl = take_u8(&p, &left);
    take(&p, &left, symlink, sl);
    symlink[sl] = 0;
    r.symlink = symlink;
    r.xattrlen = (int)take_u8(&p, &left);
    take(&p, &left, xattr, (size_t)r.xattrlen);
    r.xattr = xattr;

    struct catalog cat;
    memset(&cat, 0, sizeof cat);
    cat.id = (int)(r.rowid & 0xffff);
    struct entry e;
    memset(&e, 0, sizeof e);
    if (entry_from_row(&e, &cat, &r) == 0) {
        struct stat st;
        fill_stat(&e, &st);
        char out[300];
        for (size_t cap = 0; cap < 8; cap++) symlink_copy(out, cap, e.symlink);
        symlink_copy(out, sizeof out, e.symlink);
        /* every listed name can be read back; every buffer size is handled */
        char list[600];
        int total = xattr_list(e.xattr, e.xattr_len, list, sizeof list);
        if (total < 0 || total != xattr_list(e.xattr, e.xattr_len, NULL, 0)) abort();
        for (int cap = 1; cap <= total; cap++) {
            char small[600];
            int t = xattr_list(e.xattr, e.xattr_len, small, (size_t)cap);
            if (t != -ERANGE && t != total) abort();
        }
        for (int pos = 0; pos < total; pos += (int)strlen(list + pos) + 1) {
            char v[300];
            int vl = xattr_get(e.xattr, e.xattr_len, list + pos, NULL, 0);
            if (vl < 0 || xattr_get(e.xattr, e.xattr_len, list + pos, v, sizeof v) != vl) abort();
            if (vl > 1 && xattr_get(e.xattr, e.xattr_len, list + pos, v, (size_t)vl - 1) != -ERANGE) abort();
        }
        xattr_get(e.xattr, e.xattr_len, "user.missing", NULL, 0);
        entry_free(&e);
    }

    struct piece pieces[64];
    int n = 0;
    while (left > 0 && n < 64) {
        int64_t off = (int64_t)take_u64(&p, &left), sz = (int64_t)take_u64(&p, &left);
        unsigned has = take_u8(&p, &left);
        piece_set(&pieces[n++], off, sz, has & 1 ? hash : NULL, has & 1 ? 20 : 0);
    }
    uint64_t covered;
    if (chunks_check(pieces, n, (uint64_t)r.size, &covered) == 0) {
        /* the arithmetic op_read does: which piece holds a position, how much to copy */
        uint64_t probes[4] = {0, (uint64_t)r.size / 2, (uint64_t)r.size ? (uint64_t)r.size - 1 : 0, (uint64_t)r.size};
        for (int k = 0; k < 4; k++) {
            int hits = 0;
            for (int i = 0; i < n; i++) {
                uint64_t pos = probes[k];
                if (pos < pieces[i].offset || pos - pieces[i].offset >= pieces[i].size) continue;
                uint64_t want = pieces[i].size - (pos - pieces[i].offset);
                if (want == 0 || want > pieces[i].size) abort();
                hits++;
            }
            if (hits > 1 || (probes[k] < (uint64_t)r.size && hits != 1)) abort();
        }
    }
    return 0;
}
