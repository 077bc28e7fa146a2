// The images page: the project's images (and the public ones), read over REST when the page first
// opens and kept up to date by the stream's image events; an upload form with its progress.

import { LiveCollection, LiveTable } from "./live.js";

const $ = (id) => document.getElementById(id);

/** A size in bytes for people: "12.0 MiB". */
export function sizeText(size) {
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
    this.images = new LiveCollection("image");
    this.loading = false;
    this.table = new LiveTable(app, this.images, $("image-rows"), {
      noun: "Image",
      columns: [
        { field: "name", text: (image) => image.name || image.id },
        { field: "status", text: (image) => image.status },
        { field: "visibility", text: (image) => image.visibility },
        { field: "size", text: (image) => sizeText(image.size) },
        { field: "disk_format", text: (image) => image.disk_format || "" },
      ],
      actions: (image) => [
        {
          name: "Delete",
          label: `Delete image ${image.name || image.id}`,
          run: () => this.remove(image),
          enabled: image.owner === app.session.project.id,
        },
      ],
    });
    $("upload-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
  }

  /** The page opens: the listing, once per session (the events keep it up to date after). */
  async show() {
    if (this.images.loaded || this.loading) return;
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
      this.images.load(images);
    } finally {
      this.loading = false;
    }
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
