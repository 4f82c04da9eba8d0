"""The lab: real BIND, PowerDNS, nginx, OpenSSH and Pebble on loopback addresses, and the
demo that runs the whole job on it."""
