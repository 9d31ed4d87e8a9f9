"""SQL migrations of the audit store, applied by `pupilflow migrate`."""
