"""The starter site and the nginx virtual host, rendered (pure)."""
