"""The release page: one self-contained HTML file (inline CSS and SVG, a few lines of inline script).

Everything is escaped; nothing refers to the network; the order of every list is fixed (tags newest
first, packages and repositories by name), so the same data gives the same bytes. The only script
compares the whitelist's expiry with the viewer's clock, which the page itself must not contain.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
from html import escape

from cernvm_build import __version__
from cernvm_build.lock.diff import KINDS, Change, summary_line
from cernvm_build.lock.lockfile import lock_epoch
from cernvm_build.report.collect import ReportData, TagReport
from cernvm_build.report.svg import human_bytes

WARN_DAYS = 7            # the whitelist warning turns on this many days before expiry

CSS = """
:root { --fg:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#ffffff; --panel:#f5f7fa; --accent:#2f6690;
  --ok:#2f7d32; --warn:#b7791f; --bad:#b42318; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg); background:var(--bg); }
main { max-width:1240px; margin:0 auto; padding:24px 28px 48px; }
header.page { border-bottom:3px solid var(--accent); padding-bottom:12px; margin-bottom:18px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:20px; margin:34px 0 10px; }
h3 { font-size:16px; margin:22px 0 8px; }
h1 code, h2 code { font-size:inherit; }
.lede, .muted { color:var(--muted); }
code, pre, .mono { font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace; font-size:13px; }
pre { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px 12px;
  overflow-x:auto; white-space:pre; }
table { border-collapse:collapse; width:100%; margin:6px 0 10px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:13px; color:var(--muted); font-weight:600; background:var(--panel); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.num, td.nowrap { white-space:nowrap; }
a { color:var(--accent); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600;
  background:var(--panel); border:1px solid var(--line); color:var(--fg); vertical-align:middle; }
.badge.ok { background:#e8f5e9; border-color:#a5d6a7; color:var(--ok); }
.badge.warn { background:#fff4e5; border-color:#f6c177; color:var(--warn); }
.badge.bad { background:#fdecea; border-color:#f5a9a1; color:var(--bad); }
.notice { border-left:5px solid var(--line); background:var(--panel); padding:10px 14px; border-radius:4px; }
.notice.ok { border-left-color:var(--ok); }
.notice.warn { border-left-color:var(--warn); background:#fff8ec; }
.notice.bad { border-left-color:var(--bad); background:#fdf0ee; }
section.tag { border-top:1px solid var(--line); margin-top:30px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:10px 0; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; overflow-wrap:anywhere; }
.diff-added td:first-child { color:var(--ok); }
.diff-removed td:first-child { color:var(--bad); }
.diff-upgraded td:first-child, .diff-downgraded td:first-child { color:var(--accent); }
figure { margin:10px 0; overflow-x:auto; }
.table-wrap { overflow-x:auto; }
figure svg { max-width:100%; height:auto; }
ul.downloads { padding-left:18px; }
details summary { cursor:pointer; color:var(--accent); }
footer { margin-top:40px; color:var(--muted); font-size:13px; border-top:1px solid var(--line); padding-top:10px; }
"""

SCRIPT = """
(function () {
  var box = document.getElementById("whitelist");
  var out = document.getElementById("whitelist-status");
  if (!box || !out || !box.dataset.expires) { return; }
  var left = (Number(box.dataset.expires) * 1000 - Date.now()) / 86400000;
  var warn = Number(box.dataset.warnDays);
  var state = left <= 0 ? "bad" : (left < warn ? "warn" : "ok");
  var days = Math.floor(Math.abs(left));
  out.textContent = left <= 0 ? "EXPIRED " + days + " day(s) ago: clients refuse this repository until it is "
      + "re-signed (cernvm-build cvmfs resign)."
    : (left < warn ? "Expires in " + days + " day(s): re-sign it soon (cernvm-build cvmfs resign)."
      : "Valid for " + days + " more day(s).");
  box.className = "notice whitelist " + state;
  box.dataset.state = state;
})();
"""


def utc(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def metadata_date(text: str) -> str:
    """A Release Date (RFC 2822) or rpm-md revision (Unix time) in the page's one date format."""
    if not text:
        return ""
    try:
        return utc(int(email.utils.parsedate_to_datetime(text).timestamp()))
    except (TypeError, ValueError):
        return utc(int(text)) if text.isdigit() else text


def e(text: object) -> str:
    return escape(str(text), quote=True)


def _signature_badge(t: TagReport) -> str:
    s = t.signature
    if s.state == "unsigned":
        return '<span class="badge warn sig-unsigned">unsigned</span>'
    if s.state == "invalid":
        return f'<span class="badge bad sig-invalid" title="{e(s.note)}">invalid signature</span>'
    who = f"key {s.signer[:12]}" if s.state == "key" else (s.signer or "keyless")
    if s.verified:
        return f'<span class="badge ok sig-verified" title="{e(s.signer)}">&#10003; {e(who)}</span>'
    if s.verified is False:
        return f'<span class="badge bad sig-failed" title="{e(s.note)}">&#10007; {e(who)}</span>'
    return f'<span class="badge sig-signed" title="{e(s.note)}">{e(who)}</span>'


def _signature_text(t: TagReport) -> str:
    s = t.signature
    if s.state == "unsigned":
        return "unsigned (no signature bundle in the snapshot)"
    if s.state == "invalid":
        return f"invalid: {e(s.note)}"
    if s.state == "key":
        text = f"key <code>{e(s.signer)}</code>"
    else:
        text = f"keyless: <code>{e(s.signer or '?')}</code>, issuer <code>{e(s.issuer or '?')}</code>"
    if s.verified:
        return text + ' <span class="badge ok">verified</span>'
    if s.verified is False:
        return text + f' <span class="badge bad">{e(s.note)}</span>'
    return text + f' <span class="muted">({e(s.note)})</span>'


def _kernel_short(t: TagReport) -> str:
    """linux-image-6.1.0-50-amd64 6.1.176-1 -> '6.1.0-50-amd64' (what uname -r says), version as a tooltip."""
    if t.kernel is None:
        return '<span class="muted">—</span>'
    release = t.kernel.name.removeprefix("linux-image-")
    return f'<span class="kernel" title="{e(t.kernel.name)} {e(t.kernel.evr)}">{e(release)}</span>'


def _changes(t: TagReport) -> str:
    if t.closure is None:
        return '<span class="muted">no lock</span>'
    if t.diff is None:
        return '<span class="muted">first of its release</span>'
    return e(summary_line(t.diff))


def _source(c: Change) -> str:
    if c.old is not None and c.new is not None and c.old.repository != c.new.repository:
        return f"{c.old.repository} → {c.new.repository}"
    return (c.new or c.old).repository


def render(data: ReportData, *, charts: dict[str, str], links: dict[str, dict[str, str]],
           repo_url: str | None = None, signing_key_name: str | None = None) -> str:
    """The page. CHARTS: 'tags' and 'packages:<slug>' -> SVG text; LINKS: slug -> {kind: relative path}."""
    where = repo_url or data.location
    out: list[str] = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f'<meta name="generator" content="cernvm-build {e(__version__)} report">',
                      f"<title>Release page: {e(data.fqrn)}</title>", f"<style>{CSS}</style>", "</head>",
                      "<body>", "<main>"]
    n = len(data.tags)
    out += ['<header class="page" id="top">', f"<h1>Releases of <code>{e(data.fqrn)}</code></h1>",
            f'<p class="lede">{n} snapshot{"s" if n != 1 else ""} shown'
            + (f" of {len(data.all_tags)}" if n != len(data.all_tags) else "")
            + f", each read from the repository itself (its lock at <code>/.cernvm/closure.lock.toml</code>). "
            f"Repository revision {data.revision}, last published {e(utc(data.manifest_timestamp))}.</p>",
            "</header>"]
    out += _whitelist(data)
    out += _overview(data, charts)
    for t in data.tags:
        out += _tag_section(data, t, charts, links.get(t.slug, {}), where, signing_key_name)
    out += ["<footer>", (f"Generated by cernvm-build {e(__version__)} "
            f"(<code>cernvm-build report {e(data.location)}</code>) from the repository alone: the same "
            "repository gives the same page. Sizes in binary units (MiB = 2<sup>20</sup> bytes)."),
            "</footer>", "</main>", f"<script>{SCRIPT}</script>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def _whitelist(data: ReportData) -> list[str]:
    wl = data.whitelist
    if wl is None:
        return ['<section id="whitelist" class="notice whitelist bad" data-state="bad">',
                "<strong>Whitelist:</strong> not read.", "</section>"]
    days = (wl.expires - wl.created) // 86400
    checked = ("signature checked with the master key" if data.whitelist_signature_checked
               else "signature not checked here (give --pubkey FQRN.pub)")
    return [(f'<section id="whitelist" class="notice whitelist" data-expires="{wl.expires}" '
            f'data-warn-days="{WARN_DAYS}">'),
            (f"<strong>Whitelist</strong> (<code>.cvmfswhitelist</code>, {e(checked)}): signed "
            f'{e(utc(wl.created))}, <strong>expires <time datetime="{e(utc(wl.expires))}">'
            f"{e(utc(wl.expires))}</time></strong> ({days} days). Clients refuse the repository after that "
            "date until it is re-signed with the master key (<code>cernvm-build cvmfs resign</code>)."),
            (f'<div id="whitelist-status" class="whitelist-status">The warning (less than {WARN_DAYS} days left, '
            "or expired) is computed against the viewer's clock, which needs JavaScript.</div>"),
            "</section>"]


def _overview(data: ReportData, charts: dict[str, str]) -> list[str]:
    out = ['<section id="overview">', "<h2>Snapshots</h2>"]
    if not data.tags:
        return out + ['<p class="muted">This repository has no named tags yet.</p>', "</section>"]
    out += ['<div class="table-wrap">', '<table id="tags-table" class="tags">', ("<thead><tr><th>tag</th><th>release</th><th>date</th>"
            '<th class="num">packages</th><th class="num">tree size</th><th>kernel</th><th>signature</th>'
            "<th>changes</th></tr></thead>"), "<tbody>"]
    for t in data.tags:
        kernel = _kernel_short(t)
        pkgs = len(t.closure.packages) if t.closure else '<span class="muted">—</span>'
        out.append(f'<tr class="tag-row" data-tag="{e(t.tag.name)}"><td class="nowrap"><a href="#tag-{e(t.slug)}">'
                   f'<code>{e(t.tag.name)}</code></a></td><td>{e(t.release)}</td>'
                   f'<td class="nowrap" title="{e(utc(t.tag.timestamp))}">{e(utc(t.tag.timestamp)[:10])}</td>'
                   f'<td class="num">{pkgs}</td>'
                   f'<td class="num">{e(human_bytes(t.tree_bytes))}</td><td class="nowrap">{kernel}</td>'
                   f'<td class="nowrap">{_signature_badge(t)}</td><td>{_changes(t)}</td></tr>')
    out += ["</tbody>", "</table>", "</div>"]
    if "tags" in charts:
        out += ['<figure id="chart-tags" class="chart">', charts["tags"].strip(),
                ("<figcaption class=\"muted\">Packages and tree size (the bytes of the snapshot's files, from its "
                "catalog) of each snapshot, oldest at the top, coloured by release.</figcaption>"), "</figure>"]
    out.append("</section>")
    return out


def _tag_section(data: ReportData, t: TagReport, charts: dict[str, str], links: dict[str, str], where: str,
                 signing_key_name: str | None) -> list[str]:
    name = t.tag.name
    out = [f'<section class="tag" id="tag-{e(t.slug)}" data-tag="{e(name)}">',
           f'<h2><code>{e(name)}</code> <span class="badge">{e(t.release)}</span></h2>']
    if t.tag.description:
        out.append(f'<p class="muted">{e(t.tag.description)}</p>')
    facts = [("date", e(utc(t.tag.timestamp))), ("revision", str(t.tag.revision)),
             ("root hash", f"<code>{e(t.tag.hash)}</code>")]
    c = t.closure
    if t.lock_data is None:
        facts.append(("lock", '<span class="badge warn">none stored in this snapshot</span>'))
    else:
        facts.append(("lock digest", f'<code class="lock-digest">{e(t.lock_digest)}</code>'))
        facts.append(("signature", _signature_text(t)))
    if t.lock_problem:
        facts.append(("lock problem", f'<span class="badge bad">{e(t.lock_problem)}</span>'))
    if c is not None:
        facts.append(("packages", (f"{len(c.packages)} ({e(c.flavour)}, {e(c.arch)}), "
                                  f"{e(human_bytes(c.total_size()))} to download")))
        installed = t.installed_bytes
        if installed is not None:
            facts.append(("installed size", e(human_bytes(installed)) + " (dpkg's Installed-Size)"))
        facts.append(("kernel", f"<code>{e(t.kernel.name)}</code> {e(t.kernel.evr)}" if t.kernel
                      else '<span class="muted">none (no linux-image-* package)</span>'))
        epoch = lock_epoch(c)
        if epoch:
            facts.append(("archive as of", e(utc(epoch))))
    facts.append(("tree", f"{t.tree_files} files, {e(human_bytes(t.tree_bytes))}"))
    out.append('<dl class="facts">')
    out += [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts]
    out.append("</dl>")
    if c is not None:
        out += _repositories(t)
        out += _diff(t)
    out += _downloads(links)
    key = f"packages:{t.slug}"
    if key in charts:
        out += ["<h3>Size by package</h3>", f'<figure class="chart chart-packages-figure" id="chart-{e(t.slug)}">',
                charts[key].strip(), "</figure>"]
    if c is not None:
        out += _package_table(t)
    out += _boot(data, t, where)
    if c is not None:
        out += _respawn(data, t, where, signing_key_name)
    out.append('<p><a href="#top">back to the top</a></p>')
    out.append("</section>")
    return out


def _repositories(t: TagReport) -> list[str]:
    c = t.closure
    counts: dict[str, int] = {}
    for p in c.packages:
        counts[p.repository] = counts.get(p.repository, 0) + 1
    epoch = lock_epoch(c)
    as_of = f" — the archive as of {e(utc(epoch))}" if epoch else ""
    out = [f"<h3>Repositories{as_of}</h3>", ('<table class="repositories"><thead><tr><th>name</th><th>suite</th>'
           '<th>metadata date</th><th class="num">packages</th><th>URL</th><th>signed metadata</th></tr></thead>'),
           "<tbody>"]
    for r in sorted(c.repositories, key=lambda r: r.name):
        suite = " ".join(x for x in (r.suite, " ".join(r.components)) if x)
        out.append(f'<tr><td>{e(r.name)}</td><td>{e(suite)}</td><td>{e(metadata_date(r.date or r.revision))}</td>'
                   f'<td class="num">{counts.get(r.name, 0)}</td><td><code>{e(r.url)}</code></td>'
                   f'<td><code title="sha256 {e(r.metadata_sha256)}">{e(r.metadata)} '
                   f"{e(r.metadata_sha256[:12])}…</code></td></tr>")
    out += ["</tbody>", "</table>"]
    return out


def _diff(t: TagReport) -> list[str]:
    if t.diff is None:
        return ["<h3>Changes</h3>", (f'<p class="muted diff-none">The first snapshot of {e(t.release)} in this '
                "repository: nothing to compare with.</p>")]
    d = t.diff
    out = [f'<h3>Changes since <a href="#tag-{e(_slug_of(t.previous))}"><code>{e(t.previous)}</code></a></h3>',
           (f'<p class="diff-summary"><strong>{e(summary_line(d))}</strong> ({len(d.old.packages)} → '
           f"{len(d.new.packages)} packages)</p>")]
    if any(d.changes.values()):
        out += [('<table class="diff"><thead><tr><th>change</th><th>package</th><th>old version</th>'
                "<th>new version</th><th>repository</th></tr></thead>"), "<tbody>"]
        for kind in KINDS:
            for ch in d.changes[kind]:
                old = f"<code>{e(ch.old.evr)}</code>" if ch.old else ""
                new = f"<code>{e(ch.new.evr)}</code>" if ch.new else ""
                out.append(f'<tr class="diff-row diff-{kind}" data-package="{e(ch.name)}"><td>{kind}</td>'
                           f"<td><code>{e(ch.name)}</code></td><td>{old}</td><td>{new}</td>"
                           f"<td>{e(_source(ch))}</td></tr>")
        out += ["</tbody>", "</table>"]
    for r in d.repositories:
        out.append(f'<p class="muted">repository {e(r["name"])} {e(r["change"])}: metadata '
                   f'{e(metadata_date(r["old_date"] or "") or "—")} → {e(metadata_date(r["new_date"] or "") or "—")}</p>')
    return out


def _slug_of(tag: str | None) -> str:
    from cernvm_build.report.collect import tag_slug

    return tag_slug(tag or "")


LINK_TITLES = {"lock": "closure lock (TOML)", "signature": "lock signature (Sigstore bundle)",
               "spdx": "SBOM, SPDX 2.3 (JSON)", "cyclonedx": "SBOM, CycloneDX 1.5 (JSON)"}


def _downloads(links: dict[str, str]) -> list[str]:
    if not links:
        return []
    out = ["<h3>Downloads</h3>", '<ul class="downloads">']
    for kind in ("lock", "signature", "spdx", "cyclonedx"):
        if kind in links:
            out.append(f'<li><a class="download download-{kind}" href="{e(links[kind])}">{e(LINK_TITLES[kind])}</a>'
                       f' <span class="muted mono">{e(links[kind])}</span></li>')
    out.append("</ul>")
    return out


def _package_table(t: TagReport) -> list[str]:
    out = [f"<details class=\"packages\"><summary>All {len(t.packages)} packages</summary>",
           ('<table class="packages"><thead><tr><th>package</th><th>version</th><th>repository</th>'
           '<th class="num">installed</th><th class="num">download</th></tr></thead>'), "<tbody>"]
    for p in t.packages:
        inst = human_bytes(p.installed) if p.installed is not None else "—"
        out.append(f"<tr><td><code>{e(p.name)}</code></td><td><code>{e(p.version)}</code></td>"
                   f'<td>{e(p.repository)}</td><td class="num">{e(inst)}</td>'
                   f'<td class="num">{e(human_bytes(p.download))}</td></tr>')
    out += ["</tbody>", "</table>", "</details>"]
    return out


def _boot(data: ReportData, t: TagReport, where: str) -> list[str]:
    url = where if where.startswith(("http://", "https://")) else "http://SERVER/"
    return ["<h3>Boot it</h3>",
            ("<p>Kernel command line (add it at the boot ISO's prompt, or build an ISO for it): follow the tag, "
            "or pin exactly this snapshot whatever the tag says later:</p>"),
            (f'<pre class="cmdline">cvmfs.url={e(url)} cvmfs.tag={e(t.tag.name)}\n'
            f"cvmfs.url={e(url)} cvmfs.root_hash={e(t.tag.hash)}</pre>")]


def _respawn(data: ReportData, t: TagReport, where: str, signing_key_name: str | None) -> list[str]:
    lock = f"{t.closure.name}.lock.toml"
    pub = f"{data.fqrn}.pub"
    lines = ["# the lock (and its signature) from the snapshot itself; the page's downloads are the same bytes",
             f"cernvm-build cvmfs cat {where} /.cernvm/closure.lock.toml --tag {t.tag.name} --pubkey {pub} > {lock}"]
    if t.signature.state in ("key", "keyless"):
        lines.append(f"cernvm-build cvmfs cat {where} /.cernvm/closure.lock.toml.sigstore.json --tag {t.tag.name} "
                     f"--pubkey {pub} > {lock}.sigstore.json")
    key = signing_key_name or "release.pub"
    if t.signature.state == "key":
        lines.append(f"cernvm-build verify {lock} --key {key}")
    elif t.signature.state == "keyless":
        lines.append(f"cernvm-build verify {lock} --identity {t.signature.signer or 'ID'} "
                     f"--issuer {t.signature.issuer or 'URL'}")
    lines += ["# every package into one self-contained directory, then rebuild the snapshot from it, offline",
              f"cernvm-build bundle {lock} {t.closure.name}-bundle",
              f"cernvm-build build --from-bundle {t.closure.name}-bundle"
              + (f" --verify-key {key}" if t.signature.state == "key" else "")]
    return ["<h3>Respawn it</h3>",
            ("<p>The lock pins every package by sha256; a bundle of them rebuilds the same tree, and in a fresh "
            "repository the same root hash.</p>"),
            f'<pre class="respawn">{e(chr(10).join(lines))}</pre>']
