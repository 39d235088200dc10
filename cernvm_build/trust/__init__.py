"""Signatures: lock signing and verification (DSSE/in-toto in a Sigstore bundle, by key or keyless) and
the gpgv check of signed repository metadata."""
