"""``provisioner doctor``: is this inventory ready to go live? Reads only.

Every check is data (``Check``: id, what it looked at, pass / warn / fail / skip, a
one-line detail and a one-line fix). Three groups, run side by side:

* each web host, over its one SSH connection (the host agent): the host key is
  known, sudo works without a password (non-root logins), nginx's version and
  ``nginx -t``, the TLS protocols the main config allows at the http level (nginx takes a
  listen socket's protocols from its default server, so TLS 1.0/1.1 there is allowed
  for every vhost on the port), ``server_tokens``, free space under the web root, the
  clock against this machine's; and from here: ports 80 and 443 answer on the public
  address;
* DNS: the TSIG key is accepted (a signed update whose prerequisite fails: the server
  checks the key, refuses the update, changes nothing), a signed zone transfer works,
  every nameserver answers with authority and the same SOA serial, the parent's NS
  records name ``nameservers``, CAA lets the configured CA issue;
* ACME: the directory answers, the account exists (asked with onlyReturnExisting, so
  nothing is registered), and whether the CA is staging or production, said plainly.

checks.py holds Check, DoctorReport and the pure evaluators (``*_check``: what was read
-> a Check); hosts.py, dns.py and acme.py read; run.py runs the three groups.
"""
