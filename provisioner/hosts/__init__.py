"""The web hosts: the SSH client of the host agent, and the Ansible runner."""
