"""DNS: the one client for every DNS message (updates, AXFR, queries), the pure record plan,
and the DNS step of onboarding and offboarding."""
