// The instances of the project, as the page knows them: loaded once over REST, then kept up to date
// by the event stream's instance events (each carries the instance's whole new state).

import { LiveCollection } from "./live.js";

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

/** The project's instances: a LiveCollection of instance events (``load`` takes REST servers). */
export function instanceCollection() {
  return new LiveCollection("instance", fromEvent, fromServer);
}
