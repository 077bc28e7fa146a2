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
          name: "Delete",
          label: `Delete volume ${volume.name || volume.id}`,
          run: () => this.remove(volume),
          enabled: ["available", "error"].includes(volume.status),
        },
      ],
    });
    $("volume-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  path(rest = "") {
    return `/volume/v3/${this.app.session.project.id}/volumes${rest}`;
  }

  /** The page opens: the listing, once per session (the events keep it up to date after). */
  async show() {
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
}
