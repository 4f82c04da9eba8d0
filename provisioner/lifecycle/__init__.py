"""An agency's life on the hosts: onboarding, offboarding and restore, backups, content
access over SFTP, and the systemd timers."""
