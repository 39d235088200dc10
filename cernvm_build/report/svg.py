"""Small SVG charts, written as text (no plotting library): deterministic bytes for the same numbers.

Each function returns a complete, stand-alone SVG document (also valid inline in HTML5): sizes are
in user units with a viewBox, so the chart scales with the page; text uses the page's font stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

PALETTE = ("#2f6690", "#c0392b", "#3a7d44", "#8e44ad", "#b7791f", "#1f7a8c", "#6d6875", "#9c6644")
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif\""
TEXT = "#1f2933"
MUTED = "#616e7c"
GRID = "#d9e2ec"


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MiB' (binary units, one decimal; bytes as an integer)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _num(x: float) -> str:
    """Coordinates with at most one decimal and no trailing zeros: stable text for equal inputs."""
    s = f"{x:.1f}"
    return s.removesuffix(".0")


def _open(width: int, height: int, label: str, css_class: str) -> list[str]:
    return [(f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{_attr(label)}" {FONT} font-size="12">'),
            f"<title>{escape(label)}</title>"]


def size_by_package(items: list[tuple[str, int]], title: str, *, top: int = 15, width: int = 720) -> str:
    """Horizontal bars of the TOP largest items, then one bar for all others together."""
    ranked = sorted(items, key=lambda kv: (-kv[1], kv[0]))
    rows = ranked[:top]
    rest = ranked[top:]
    if rest:
        rows.append((f"other ({len(rest)} packages)", sum(v for _, v in rest)))
    total = sum(v for _, v in ranked) or 1
    label_w, value_w, bar_h, gap, head = 230, 130, 16, 6, 30
    plot_w = width - label_w - value_w
    height = head + len(rows) * (bar_h + gap) + 8
    biggest = max((v for _, v in rows), default=0) or 1
    out = _open(width, height, title, "chart chart-packages")
    out.append(f'<text x="0" y="16" font-size="13" font-weight="600" fill="{TEXT}">{escape(title)}</text>')
    for i, (name, value) in enumerate(rows):
        y = head + i * (bar_h + gap)
        w = max(plot_w * value / biggest, 1 if value else 0)
        other = rest and i == len(rows) - 1
        colour = MUTED if other else PALETTE[0]
        out.append(f'<text x="{label_w - 8}" y="{_num(y + bar_h - 4)}" text-anchor="end" fill="{TEXT}">'
                   f"{escape(_clip(name, 30))}</text>")
        out.append(f'<rect x="{label_w}" y="{y}" width="{_num(w)}" height="{bar_h}" rx="2" fill="{colour}">'
                   f"<title>{escape(name)}: {human_bytes(value)}</title></rect>")
        out.append(f'<text x="{_num(label_w + w + 6)}" y="{_num(y + bar_h - 4)}" fill="{MUTED}">'
                   f"{human_bytes(value)} ({100 * value / total:.1f} %)</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class TagPoint:
    tag: str
    release: str
    packages: int
    size: int            # bytes (installed or tree size)


def across_tags(points: list[TagPoint], title: str, size_label: str, *, width: int = 760) -> str:
    """One row per tag (oldest first, as given): a packages bar and a size bar, coloured by release."""
    releases = sorted({p.release for p in points})
    colour = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(releases)}
    label_w, gap_panels, bar_h, gap, head = 230, 30, 16, 8, 48
    panel_w = (width - label_w - gap_panels) // 2
    legend_h = 22 if releases else 0
    height = head + len(points) * (bar_h + gap) + legend_h + 10
    most_pkgs = max((p.packages for p in points), default=0) or 1
    most_size = max((p.size for p in points), default=0) or 1
    x_pkgs, x_size = label_w, label_w + panel_w + gap_panels
    out = _open(width, height, title, "chart chart-tags")
    out.append(f'<text x="0" y="16" font-size="13" font-weight="600" fill="{TEXT}">{escape(title)}</text>')
    out.append(f'<text x="{x_pkgs}" y="38" fill="{MUTED}">packages</text>')
    out.append(f'<text x="{x_size}" y="38" fill="{MUTED}">{escape(size_label)}</text>')
    value_room = 90
    for i, p in enumerate(points):
        y = head + i * (bar_h + gap)
        c = colour[p.release]
        wp = (panel_w - value_room) * p.packages / most_pkgs
        ws = (panel_w - value_room) * p.size / most_size
        out.append(f'<text x="{label_w - 8}" y="{_num(y + bar_h - 4)}" text-anchor="end" fill="{TEXT}">'
                   f"{escape(_clip(p.tag, 34))}<title>{escape(p.tag)} ({escape(p.release)})</title></text>")
        out.append(f'<rect x="{x_pkgs}" y="{y}" width="{_num(wp)}" height="{bar_h}" rx="2" fill="{c}"/>')
        out.append(f'<text x="{_num(x_pkgs + wp + 6)}" y="{_num(y + bar_h - 4)}" fill="{MUTED}">{p.packages}</text>')
        out.append(f'<rect x="{x_size}" y="{y}" width="{_num(ws)}" height="{bar_h}" rx="2" fill="{c}" '
                   'fill-opacity="0.75"/>')
        out.append(f'<text x="{_num(x_size + ws + 6)}" y="{_num(y + bar_h - 4)}" fill="{MUTED}">'
                   f"{human_bytes(p.size)}</text>")
    out.append(f'<line x1="{x_pkgs}" y1="{head - 4}" x2="{x_pkgs}" y2="{head + len(points) * (bar_h + gap) - gap + 4}" '
               f'stroke="{GRID}"/>')
    out.append(f'<line x1="{x_size}" y1="{head - 4}" x2="{x_size}" y2="{head + len(points) * (bar_h + gap) - gap + 4}" '
               f'stroke="{GRID}"/>')
    y = head + len(points) * (bar_h + gap) + 12
    x = label_w
    for r in releases:
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" rx="2" fill="{colour[r]}"/>')
        out.append(f'<text x="{x + 17}" y="{y}" fill="{TEXT}">{escape(r)}</text>')
        x += 30 + 7 * len(r)
    out.append("</svg>")
    return "\n".join(out) + "\n"
