"""`cernvm-build build`: the definition (pipeline/*.toml), the engine that runs and skips stages, and
the stages themselves (lock -> sign -> fetch -> rootfs -> publish -> iso -> image)."""
