// The instances of the project, as the page knows them: loaded once over REST, then kept up to date
// by the event stream's instance events (each carries the instance's whole new state).

/** An instance's addresses as one line: "net: 10.0.0.5, fd00::5; other: ...". */
export function addressText(addresses) {
  return Object.entries(addresses || {})
    .map(([network, list]) => `${network}: ${list.map((address) => address.addr).join(", ")}`)
    .join("; ");
}

/** An instance from the REST API's server (compute 2.25). */
export function fromServer(server) {
  return {
    id: server.id,
    name: server.name,
    status: server.status,
    task: server["OS-EXT-STS:task_state"] || null,
    addresses: server.addresses || {},
    host: server["OS-EXT-SRV-ATTR:host"] || null,
    flavor: server.flavor ? server.flavor.id : null,
  };
}

/** An instance from an instance event's state (the conductor's view of it). */
export function fromEvent(state) {
  return {
    id: state.id,
    name: state.name,
    status: state.status,
    task: state.task_state || null,
    addresses: state.addresses || {},
    host: state.host || null,
    flavor: state.flavor ? state.flavor.id : null,
  };
}

export class InstanceStore {
  constructor() {
    this.instances = new Map();
    this.loaded = false;
    this.pending = [];
    this.listeners = new Set();
  }

  /** Tell ``listener(change)`` of every change: {kind: "reset"} or {kind: "put"|"gone", instance,
   * before, event} (``event``: the stream's event that made it, none for the page's own guess). */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  /** Start again: events are kept until ``load`` gives the REST listing. */
  unload() {
    this.loaded = false;
    this.pending = [];
  }

  /** The REST listing, then every event that came while it was being read, in order. */
  load(servers) {
    this.instances = new Map(servers.map((server) => [server.id, fromServer(server)]));
    this.loaded = true;
    this.emit({ kind: "reset" });
    const pending = this.pending;
    this.pending = [];
    for (const event of pending) this.apply(event);
  }

  /** An event of the stream: applied now, or kept until the listing is loaded. */
  apply(event) {
    if (event.kind !== "instance") return;
    if (!this.loaded) {
      this.pending.push(event);
      return;
    }
    const before = this.instances.get(event.id);
    if (event.type === "instance.deleted") {
      if (!before) return;
      this.instances.delete(event.id);
      this.emit({ kind: "gone", instance: before, before, event });
      return;
    }
    const instance = fromEvent(event.state);
    this.instances.set(instance.id, instance);
    this.emit({ kind: "put", instance, before, event });
  }

  /** An instance the page itself just asked for (its create answered): shown until its events come. */
  expect(id, name) {
    if (this.instances.has(id)) return;
    const instance = { id, name, status: "BUILD", task: "scheduling", addresses: {}, host: null, flavor: null };
    this.instances.set(id, instance);
    this.emit({ kind: "put", instance, before: undefined });
  }
}
