"""The shared runtime of every server process: config, stores, token checks, policy, and the
vocabulary of events and states. Above the bus, below the actors, the node and the gateway."""
