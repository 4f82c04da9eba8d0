"""The lab: real BIND, PowerDNS, nginx, OpenSSH and Pebble on loopback addresses, and the
demo that runs the whole job on it.

From the bottom up: ``layout`` (where every lab file lives), ``render`` (what goes in the
servers' configs, pure), ``keys`` (keys, certificates, the atomic write), ``loopback`` (the
addresses on lo), ``probes`` and ``processes`` (starting, checking and stopping servers),
``topology`` (which hosts and servers the inventory's lab has), ``prepare`` (the files
``lab up`` writes), ``control`` (``Lab``: up, down, status, reset) and ``demo``.
"""
