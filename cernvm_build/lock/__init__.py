"""The lock: shopping lists (recipe), the lock format (lockfile), version order, and what reads a
lock alone — diff, why/graph, show, SBOM. `lock.resolve` turns a recipe into a lock, and holds the
update policies (stay, diverge, rebase), which are resolutions relative to a lock."""
