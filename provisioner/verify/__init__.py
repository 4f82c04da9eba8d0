"""Verification of agency sites (DNS, HTTP, TLS, the publication score), and beside it the
sweep, its history, its reports and alerts."""
