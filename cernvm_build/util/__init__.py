"""Small helpers every stage uses and none owns: files written atomically, HTTP, strict TOML tables,
tree fingerprints, in-order work with look-ahead, and the content-addressed store."""
