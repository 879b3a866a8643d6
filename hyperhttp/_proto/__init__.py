"""Sans-I/O protocol rules: bytes in, events out."""
