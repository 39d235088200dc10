"""Packages for a lock: fetched and verified into the content store (util.content_store), and
preservation bundles that respawn a lock with no network."""
