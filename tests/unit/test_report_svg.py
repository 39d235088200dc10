"""The release page's SVG charts: well-formed, escaped, top-N plus "other", the same bytes for the same numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cernvm_build.report.svg import TagPoint, across_tags, human_bytes, size_by_package

SVG = "{http://www.w3.org/2000/svg}"


def test_size_by_package_keeps_the_largest_and_sums_the_rest():
    items = [(f"pkg{i:02d}", (i + 1) * 1024) for i in range(20)] + [("<evil & name>", 5)]
    text = size_by_package(items, "Installed size by package, tag <x>", top=5)
    root = ET.fromstring(text)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and not t.text[0].isdigit()]
    assert labels[1:7] == ["pkg19", "pkg18", "pkg17", "pkg16", "pkg15", "other (16 packages)"]
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 6
    assert bars[-1].find(f"{SVG}title").text == f"other (16 packages): {human_bytes(sum(range(1, 16)) * 1024 + 5)}"
    assert "&lt;evil &amp; name&gt;" not in text          # it is in "other", not named
    assert size_by_package(list(reversed(items)), "Installed size by package, tag <x>", top=5) == text


def test_size_by_package_of_nothing_is_still_an_image():
    root = ET.fromstring(size_by_package([], "empty"))
    assert root.findall(f"{SVG}rect") == []


def test_across_tags_colours_by_release_and_escapes():
    points = [TagPoint("a-1", "rel<1>", 10, 1 << 20), TagPoint("b-1", "other", 5, 3 << 20),
              TagPoint("a-2", "rel<1>", 12, 2 << 20)]
    text = across_tags(points, "Snapshots", "tree size")
    root = ET.fromstring(text)
    fills = [r.get("fill") for r in root.findall(f"{SVG}rect")]
    # per tag: a packages bar and a size bar in its release's colour; then one legend swatch per release
    assert fills[0] == fills[1] == fills[4] == fills[5] != fills[2]
    assert len(fills) == 3 * 2 + 2
    assert "rel&lt;1&gt;" in text and "3.0 MiB" in text
    assert across_tags(points, "Snapshots", "tree size") == text


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 << 30)] == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB",
                                                                      "5.0 GiB"]
