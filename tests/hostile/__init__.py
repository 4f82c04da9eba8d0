"""The hostile-site kit: loopback web servers that behave like broken or hostile sites."""
