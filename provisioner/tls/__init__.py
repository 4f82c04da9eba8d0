"""TLS certificates: the ACME client, certificate records, renewal decisions and the
rate-limit ledger."""
