"""Model providers: the deterministic local one (embedded default) and user-registered ones."""
