"""Classic disk images of a root tree (the comparison to ISO + CernVM-FS objects)."""
