"""The net actor (Neutron), a package split by job: see ``actors.net.actor``."""
