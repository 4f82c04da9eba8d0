"""What keeps a run safe: the inventory lock, the audit log, secret files and scrubbing."""
