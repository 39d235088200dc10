"""The dependency graph of a closure, from the lock alone: *why is X here?*, and DOT output."""

from __future__ import annotations

from cernvm_build.errors import LockError
from cernvm_build.lock.lockfile import Closure


def build_graph(c: Closure):
    import networkx as nx

    g = nx.DiGraph()
    for p in c.packages:
        g.add_node(p.name)
        for d in p.depends:
            g.add_edge(p.name, d)
    return g


def why(c: Closure, name: str, limit: int = 5) -> list[list[str]]:
    """Shortest dependency paths from the shopping list's roots to NAME (one per root that reaches it)."""
    import networkx as nx

    names = {p.name for p in c.packages}
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, sorted(names), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LockError(f"{name} is not in closure {c.name}{hint}")
    g = build_graph(c)
    paths = []
    for root in sorted(c.roots):
        if root in g and nx.has_path(g, root, name):
            paths.append(nx.shortest_path(g, root, name))
    paths.sort(key=lambda p: (len(p), p))
    return paths[:limit]


def to_dot(c: Closure) -> str:
    roots = set(c.roots)
    lines = [f'digraph "{c.name}" {{', "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for p in sorted(c.packages, key=lambda p: p.name):
        style = ', style=filled, fillcolor="#d0e4ff"' if p.name in roots else ""
        lines.append(f'  "{p.name}" [label="{p.name}\\n{p.evr}"{style}];')
    for p in sorted(c.packages, key=lambda p: p.name):
        for d in p.depends:
            lines.append(f'  "{p.name}" -> "{d}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
