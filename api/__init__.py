"""The actors' bus APIs: one module per service, each the typed facets its actor serves.

Callers make a client from a facet (``Scheduler.client(bus)``) and never spell a subject;
the actor serving a facet subclasses it (see ``bus.api``). Nothing here does work: these
modules are the contract between the services, imported by both sides.
"""
