"""Containers as instances: a node kind that runs system containers with liblxc (``lxc-*`` tools)."""
