"""The lock: shopping lists (recipe), the lock format (lockfile), version order, and everything that
reads a lock alone — diff, why/graph, show, SBOM — plus the update policies (stay, diverge, rebase).
`lock.resolve` turns a recipe into a lock."""
