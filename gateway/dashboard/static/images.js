// The images page: the project's images (and the public ones), read over REST when the page first
// opens and kept up to date by the stream's image events; an upload form with its progress.

const $ = (id) => document.getElementById(id);

/** An image's size for people: "12.0 MiB". */
function sizeText(size) {
  if (size === null || size === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export class ImagesPage {
  constructor(app) {
    this.app = app;
    this.images = new Map();
    this.rows = new Map();
    this.loaded = false;
    this.loading = false;
    this.pending = [];
    this.body = $("image-rows");
    $("upload-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
  }

  /** Forget everything (another session): the listing is read again when the page opens. */
  unload() {
    this.images = new Map();
    this.loaded = false;
    this.pending = [];
    this.body.replaceChildren();
    this.rows.clear();
  }

  /** The page opens: the listing, once; the events that came while it was read, after it. */
  async show() {
    if (this.loaded || this.loading) return;
    this.loading = true;
    const session = this.app.session;
    try {
      const images = [];
      let path = "/image/v2/images?limit=1000";
      while (path) {
        const page = await this.app.attempt(() => this.app.api.get(path), null);
        if (!page || session !== this.app.session) return;
        images.push(...page.images);
        path = page.next || null;
      }
      this.images = new Map(images.map((image) => [image.id, image]));
      this.loaded = true;
      this.render();
      const pending = this.pending;
      this.pending = [];
      for (const event of pending) this.apply(event);
    } finally {
      this.loading = false;
    }
  }

  /** An event of the stream (image events only count). */
  apply(event) {
    if (event.kind !== "image") return;
    if (!this.loaded) {
      this.pending.push(event);
      return;
    }
    const before = this.images.get(event.id);
    if (event.type === "image.deleted") {
      this.images.delete(event.id);
      const row = this.rows.get(event.id);
      if (row) row.tr.remove();
      this.rows.delete(event.id);
      if (before) this.app.announce(`Image ${before.name} was deleted.`);
      return;
    }
    const image = event.state;
    this.images.set(image.id, image);
    const row = this.rows.get(image.id);
    if (row) this.fill(row, image);
    else this.body.append(this.row(image));
    if (before && before.status !== image.status) this.app.announce(`Image ${image.name} is now ${image.status}.`);
  }

  render() {
    this.rows.clear();
    const sorted = [...this.images.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
    this.body.replaceChildren(...sorted.map((image) => this.row(image)));
  }

  row(image) {
    const tr = document.createElement("tr");
    tr.dataset.id = image.id;
    const name = document.createElement("th");
    name.scope = "row";
    tr.append(name);
    const cells = { name };
    for (const field of ["status", "visibility", "size", "disk_format"]) {
      const td = document.createElement("td");
      td.dataset.field = field;
      cells[field] = td;
      tr.append(td);
    }
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => this.remove(this.images.get(image.id) || image));
    actions.append(remove);
    tr.append(actions);
    const row = { tr, cells, remove };
    this.rows.set(image.id, row);
    this.fill(row, image);
    return tr;
  }

  fill(row, image) {
    row.cells.name.textContent = image.name || image.id;
    row.cells.status.textContent = image.status;
    row.cells.status.dataset.status = image.status.toUpperCase();
    row.cells.visibility.textContent = image.visibility;
    row.cells.size.textContent = sizeText(image.size);
    row.cells.disk_format.textContent = image.disk_format || "";
    row.remove.disabled = image.owner !== this.app.session.project.id;
    row.remove.setAttribute("aria-label", `Delete image ${image.name || image.id}`);
  }

  async remove(image) {
    if (!confirm(`Delete image ${image.name || image.id}?`)) return;
    await this.app.attempt(() => this.app.api.del(`/image/v2/images/${image.id}`), `Deleting ${image.name}`);
  }

  async upload() {
    const form = $("upload-form");
    const data = new FormData(form);
    const file = data.get("file");
    const body = { name: data.get("name"), disk_format: data.get("disk_format"), container_format: "bare" };
    const image = await this.app.attempt(() => this.app.api.post("/image/v2/images", body), null);
    if (!image) return;
    const progress = $("upload-progress");
    progress.value = 0;
    const status = await sendFile(`/image/v2/images/${image.id}/file`, this.app.session.token, file, (done) => {
      progress.value = Math.round(done * 100);
    });
    if (status >= 300) {
      this.app.showError(`The upload of ${body.name} failed (${status}).`);
      return;
    }
    progress.value = 100;
    this.app.announce(`Image ${body.name}: uploaded.`);
    form.reset();
  }
}

/** PUT a file with its upload progress (``onProgress(fraction)``); fetch() reports none. The status. */
function sendFile(path, token, file, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("PUT", path);
    request.setRequestHeader("X-Auth-Token", token);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => resolve(request.status));
    request.addEventListener("error", () => resolve(0));
    request.send(file);
  });
}
