"""CLI commands: one module per command, named after it (`tree-digest` -> tree_digest.py); each
exposes register(subparsers). `_shared` holds the options several commands take."""
