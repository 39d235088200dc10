"""Boot side: the read-only CernVM-FS client (C), the kernel from a lock, the initramfs and the ISO."""
