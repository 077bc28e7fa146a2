"""The conductor (nova-conductor): instances, flavors, key pairs; ``actor.py`` composes its servants,
``peers.py`` names the services it calls."""
