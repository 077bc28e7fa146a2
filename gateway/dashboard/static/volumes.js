// The volumes page: the project's volumes, read over REST when the page first opens and kept up to
// date by the stream's volume events (creating, available, in-use, deleting...); create and delete.

import { LiveCollection, LiveTable } from "./live.js";

const $ = (id) => document.getElementById(id);

function attachedText(volume) {
  return (volume.attachments || []).map((attachment) => attachment.server_id).join(", ");
}

export class VolumesPage {
  constructor(app) {
    this.app = app;
    this.volumes = new LiveCollection("volume");
    this.loading = false;
    this.table = new LiveTable(app, this.volumes, $("volume-rows"), {
      noun: "Volume",
      columns: [
        { field: "name", text: (volume) => volume.name || volume.id },
        { field: "status", text: (volume) => volume.status },
        { field: "size", text: (volume) => `${volume.size} GiB` },
        { field: "attached", text: attachedText },
      ],
      actions: (volume) => [
        {
          name: "Snapshot",
          label: `Snapshot volume ${volume.name || volume.id}`,
          run: () => this.snapshot(volume),
          enabled: volume.status === "available",
        },
        {
          name: "Delete",
          label: `Delete volume ${volume.name || volume.id}`,
          run: () => this.remove(volume),
          enabled: ["available", "error"].includes(volume.status),
        },
      ],
    });
    $("snapshots-refresh").addEventListener("click", () => this.loadSnapshots());
    $("volume-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  path(rest = "") {
    return `/volume/v3/${this.app.session.project.id}/volumes${rest}`;
  }

  /** The page opens: the listing, once per session (the events keep it up to date after); the
   * snapshots, which have no events, each time (and on Refresh, and after the page's own changes). */
  async show() {
    this.loadSnapshots();
    if (this.volumes.loaded || this.loading) return;
    this.loading = true;
    const session = this.app.session;
    try {
      const listed = await this.app.attempt(() => this.app.api.get(this.path("/detail")), null);
      if (listed && session === this.app.session) this.volumes.load(listed.volumes);
    } finally {
      this.loading = false;
    }
  }

  async create() {
    const form = $("volume-form");
    const data = new FormData(form);
    const volume = { name: data.get("name"), size: Number(data.get("size")) };
    const created = await this.app.attempt(
      () => this.app.api.post(this.path(), { volume }),
      `Creating volume ${volume.name}`,
    );
    if (created) form.reset();
  }

  async remove(volume) {
    if (!confirm(`Delete volume ${volume.name || volume.id}?`)) return;
    await this.app.attempt(() => this.app.api.del(this.path(`/${volume.id}`)), `Deleting ${volume.name}`);
  }

  snapshotsPath(rest = "") {
    return `/volume/v3/${this.app.session.project.id}/snapshots${rest}`;
  }

  async loadSnapshots() {
    const listed = await this.app.attempt(() => this.app.api.get(this.snapshotsPath("/detail")), null);
    if (!listed) return;
    const names = new Map([...this.volumes.items.values()].map((volume) => [volume.id, volume.name || volume.id]));
    const rows = listed.snapshots.map((snapshot) => {
      const tr = document.createElement("tr");
      tr.dataset.id = snapshot.id;
      const name = snapshot.name || snapshot.id;
      const source = names.get(snapshot.volume_id) || snapshot.volume_id;
      const texts = [name, snapshot.status, `${snapshot.size} GiB`, source];
      texts.forEach((text, index) => {
        const cell = document.createElement(index === 0 ? "th" : "td");
        if (index === 0) cell.scope = "row";
        cell.textContent = text;
        tr.append(cell);
      });
      tr.children[1].dataset.field = "status";
      const actions = document.createElement("td");
      actions.className = "buttons";
      actions.append(
        this.button("New volume", `New volume from snapshot ${name}`, () => this.fromSnapshot(snapshot)),
        this.button("Delete", `Delete snapshot ${name}`, () => this.removeSnapshot(snapshot)),
      );
      tr.append(actions);
      return tr;
    });
    $("snapshot-rows").replaceChildren(...rows);
  }

  button(text, label, run) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", run);
    return button;
  }

  /** A snapshot of an available volume (the answer comes once it is copied: no event follows). */
  async snapshot(volume) {
    const name = `${volume.name || volume.id}-snap`;
    const snapshot = { volume_id: volume.id, name };
    const made = await this.app.attempt(
      () => this.app.api.post(this.snapshotsPath(), { snapshot }),
      `Snapshotting volume ${volume.name || volume.id}`,
    );
    if (made) await this.loadSnapshots();
  }

  /** A new volume copied from a snapshot, as big (its events show it on the volumes table). */
  async fromSnapshot(snapshot) {
    const volume = { name: `${snapshot.name || snapshot.id}-copy`, size: snapshot.size, snapshot_id: snapshot.id };
    await this.app.attempt(() => this.app.api.post(this.path(), { volume }), `Creating volume ${volume.name}`);
  }

  async removeSnapshot(snapshot) {
    const name = snapshot.name || snapshot.id;
    if (!confirm(`Delete snapshot ${name}?`)) return;
    const done = await this.app.attempt(
      () => this.app.api.del(this.snapshotsPath(`/${snapshot.id}`)),
      `Deleting snapshot ${name}`,
    );
    if (done !== null) await this.loadSnapshots();
  }
}
