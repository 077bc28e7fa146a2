// An instance's page: its state (live, from the store), actions, console log, serial console, action
// timeline, ports, floating IPs and volumes (read when the page opens; then the ports follow their
// events in place, the volumes are read again on theirs, the timeline on request, and the floating
// IPs, which have no events, after the page's own changes).

import { SerialConsole } from "./console.js";
import { actionButtons, updateButtons } from "./instances.js";
import { addressText } from "./store.js";

const $ = (id) => document.getElementById(id);

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

export class DetailPage {
  constructor(app) {
    this.app = app;
    this.id = null;
    this.buttons = actionButtons(app, () => this.instance());
    $("detail-actions").append(...this.buttons.map(({ button }) => button));
    app.store.subscribe((change) => {
      if (!this.id || (change.kind !== "reset" && change.item.id !== this.id)) return;
      this.fill();
      if (change.event) this.record(change.event);
    });
    this.flavors = new Map();
    this.serial = new SerialConsole(app);
    $("console-show").addEventListener("click", () => this.showConsole());
    $("resize-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.resize();
    });
    $("timeline-refresh").addEventListener("click", () => this.loadTimeline());
    this.ports = [];
    $("associate-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const choice = $("associate-ip");
      const address = choice.selectedOptions[0]?.textContent;
      this.associate(choice.value, this.ports[0].id, `Associating ${address}`);
    });
    $("attach-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.attach();
    });
    this.attached = new Set();
  }

  /** A volume event of the session's stream: one attached to or detached from this instance has
   * its attachments read again (and the volumes that may be attached). */
  volumeEvent(event) {
    if (!this.id || event.kind !== "volume" || $("detail-view").hidden) return;
    const mine = (event.state.attachments || []).some((attachment) => attachment.server_id === this.id);
    if (!this.instance()) return;
    if (mine || this.attached.has(event.id) || event.type === "volume.available") this.loadVolumes(true);
  }

  /** Note an event of this instance in the page's list of the events it saw (the latest 50). */
  record(event) {
    const list = $("events");
    const when = new Date(event.ts * 1000).toISOString().replace(/\.\d+Z$/, "Z");
    list.prepend(item(`${when} ${event.type}`));
    while (list.children.length > 50) list.lastElementChild.remove();
  }

  instance() {
    return this.app.store.items.get(this.id);
  }

  async show(id) {
    this.id = id;
    this.ports = [];
    this.serial.showFor(id);
    $("console-log").hidden = true;
    $("console-log").textContent = "";
    for (const list of ["timeline", "events", "ports", "volumes", "floating-ips"]) $(list).replaceChildren();
    this.fill();
    $("detail-title").focus();
    await Promise.all([this.loadTimeline(), this.loadPorts(), this.loadVolumes(), this.loadFlavors()]);
  }

  fill() {
    const instance = this.instance();
    $("detail-id").textContent = this.id;
    if (!instance) {
      if (!this.app.store.loaded) return;
      $("detail-title").textContent = "Instance deleted";
      $("detail-status").textContent = "DELETED";
      $("detail-status").dataset.status = "DELETED";
      for (const { button } of this.buttons) button.disabled = true;
      $("resize-submit").disabled = true;
      $("serial-open").disabled = true;
      return;
    }
    $("detail-title").textContent = instance.name;
    $("detail-status").textContent = instance.status;
    $("detail-status").dataset.status = instance.status;
    $("detail-task").textContent = instance.task || "none";
    $("detail-addresses").textContent = addressText(instance.addresses) || "none";
    $("detail-host").textContent = instance.host || "";
    const flavor = this.flavors.get(instance.flavor);
    $("detail-flavor").textContent = flavor ? flavor.name : instance.flavor || "";
    $("resize-submit").disabled = Boolean(instance.task) || !["ACTIVE", "SHUTOFF"].includes(instance.status);
    $("serial-open").disabled = instance.status !== "ACTIVE";
    updateButtons(this.buttons, instance);
  }

  async loadFlavors() {
    const listed = await this.app.attempt(() => this.app.api.get("/compute/v2.1/flavors/detail"), null);
    if (!listed) return;
    this.flavors = new Map(listed.flavors.map((flavor) => [flavor.id, flavor]));
    $("resize-flavor").replaceChildren(
      ...listed.flavors.map(
        (flavor) => new Option(`${flavor.name} (${flavor.vcpus} vCPU, ${flavor.ram} MiB, ${flavor.disk} GiB)`, flavor.id),
      ),
    );
    this.fill();
  }

  /** Resize to the chosen flavor; the instance's events say VERIFY_RESIZE, then confirm or revert. */
  async resize() {
    const instance = this.instance();
    const flavorRef = $("resize-flavor").value;
    if (!instance || !flavorRef) return;
    const flavor = this.flavors.get(flavorRef);
    await this.app.attempt(
      () => this.app.api.serverAction(instance.id, { resize: { flavorRef } }),
      `Resizing ${instance.name} to ${flavor ? flavor.name : flavorRef}`,
    );
  }

  async showConsole() {
    const id = this.id;
    let text;
    try {
      const output = await this.app.api.serverAction(id, { "os-getConsoleOutput": { length: 200 } });
      text = output.output || "(the console has printed nothing yet)";
    } catch (error) {
      if (error.status === 401) return this.app.attempt(() => Promise.reject(error), null);
      text = `No console log: ${error.message}`;
    }
    if (id !== this.id) return;
    const log = $("console-log");
    log.textContent = text;
    log.hidden = false;
    log.focus();
  }

  async loadTimeline() {
    const id = this.id;
    const listed = await this.app.attempt(
      () => this.app.api.get(`/compute/v2.1/servers/${id}/os-instance-actions`),
      null,
    );
    if (!listed || id !== this.id) return;
    const entries = [...listed.instanceActions].sort((a, b) => a.start_time.localeCompare(b.start_time));
    $("timeline").replaceChildren(
      ...entries.map((action) =>
        item(`${action.start_time} ${action.action}${action.message ? `: ${action.message}` : ""}`),
      ),
    );
  }

  async loadPorts() {
    const id = this.id;
    const listed = await this.app.attempt(() => this.app.api.get(`/network/v2.0/ports?device_id=${id}`), null);
    if (!listed || id !== this.id) return;
    this.ports = listed.ports;
    await this.loadFloatingIps();
    this.renderPorts();
  }

  /** A port event (it carries the whole port): this instance's ports change in place, no read. */
  portEvent(event) {
    if (!this.id || event.kind !== "port" || $("detail-view").hidden) return;
    const kept = this.ports.filter((port) => port.id !== event.id);
    const mine = event.type !== "port.deleted" && event.state.device_id === this.id;
    if (!mine && kept.length === this.ports.length) return;
    this.ports = mine ? [...kept, event.state] : kept;
    this.renderPorts();
  }

  renderPorts() {
    $("ports").replaceChildren(
      ...this.ports.map((port) => {
        const tr = document.createElement("tr");
        tr.dataset.id = port.id;
        const ips = port.fixed_ips.map((fixed) => fixed.ip_address).join(", ");
        for (const text of [port.id, port.network_id, port.mac_address, ips, port.status]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  /** The floating IPs on this instance's ports, and the project's free ones to associate (floating
   * IPs have no events: read when the page opens and after the page's own changes). */
  async loadFloatingIps() {
    const id = this.id;
    const listed = await this.app.attempt(() => this.app.api.get("/network/v2.0/floatingips"), null);
    if (!listed || id !== this.id) return;
    const ports = new Set(this.ports.map((port) => port.id));
    const mine = listed.floatingips.filter((floating) => ports.has(floating.port_id));
    $("floating-ips").replaceChildren(
      ...(mine.length
        ? mine.map((floating) => {
            const address = floating.floating_ip_address;
            const li = item(`${address} to ${floating.fixed_ip_address} `);
            const button = document.createElement("button");
            button.type = "button";
            button.textContent = "Disassociate";
            button.setAttribute("aria-label", `Disassociate floating IP ${address}`);
            button.addEventListener("click", () => this.associate(floating.id, null, `Disassociating ${address}`));
            li.append(button);
            return li;
          })
        : [item("No floating IPs.")]),
    );
    const free = listed.floatingips.filter((floating) => !floating.port_id);
    $("associate-ip").replaceChildren(
      ...free.map((floating) => new Option(floating.floating_ip_address, floating.id)),
    );
    $("associate-submit").disabled = !free.length || !this.ports.length;
  }

  /** Put a floating IP on the instance's first port (``portId`` null: take it off). */
  async associate(floatingId, portId, announcement) {
    const done = await this.app.attempt(
      () => this.app.api.put(`/network/v2.0/floatingips/${floatingId}`, { floatingip: { port_id: portId } }),
      announcement,
    );
    if (done) await this.loadFloatingIps();
  }

  async loadVolumes(quietly = false) {
    const id = this.id;
    const project = this.app.session.project.id;
    const read = () =>
      Promise.all([
        this.app.api.get(`/compute/v2.1/servers/${id}/os-volume_attachments`),
        this.app.api.get(`/volume/v3/${project}/volumes/detail?status=available`),
      ]);
    const loaded = quietly ? await read().catch(() => null) : await this.app.attempt(read, null);
    if (!loaded || id !== this.id) return;
    const [listed, available] = loaded;
    const attached = listed.volumeAttachments;
    this.attached = new Set(attached.map((attachment) => attachment.volumeId));
    $("volumes").replaceChildren(
      ...(attached.length
        ? attached.map((attachment) => {
            const li = item(`${attachment.volumeId} on ${attachment.device || "(no device)"} `);
            const detach = document.createElement("button");
            detach.type = "button";
            detach.textContent = "Detach";
            detach.setAttribute("aria-label", `Detach volume ${attachment.volumeId}`);
            detach.addEventListener("click", () => this.detach(attachment.volumeId));
            li.append(detach);
            return li;
          })
        : [item("No volumes attached.")]),
    );
    const choice = $("attach-volume").value;
    const option = (volume) => new Option(`${volume.name || volume.id} (${volume.size} GiB)`, volume.id);
    $("attach-volume").replaceChildren(...available.volumes.map(option));
    if (available.volumes.some((volume) => volume.id === choice)) $("attach-volume").value = choice;
    $("attach-submit").disabled = !available.volumes.length;
  }

  /** Attach the chosen volume (its volume events say when it is in use: the list follows them). */
  async attach() {
    const volumeId = $("attach-volume").value;
    if (!volumeId) return;
    await this.app.attempt(
      () =>
        this.app.api.post(`/compute/v2.1/servers/${this.id}/os-volume_attachments`, {
          volumeAttachment: { volumeId },
        }),
      `Attaching volume ${volumeId}`,
    );
  }

  async detach(volumeId) {
    await this.app.attempt(
      () => this.app.api.del(`/compute/v2.1/servers/${this.id}/os-volume_attachments/${volumeId}`),
      `Detaching volume ${volumeId}`,
    );
  }
}
