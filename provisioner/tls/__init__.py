"""TLS certificates: what a certificate says and the controller's records of them
(certs), what to order, renew or keep (decisions, pure), the one name matcher (names),
the ACME client (acme), issuing and installing (issuer), which certificate a host
serves (served), the 'certs' listing (listing) and the CA's rate-limit ledger
(ratelimit)."""
