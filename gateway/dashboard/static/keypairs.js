// The key pairs page: the user's key pairs (read when the page opens: key pairs have no events),
// one generated (its private key shown once, to save) or imported, and deleted.

const $ = (id) => document.getElementById(id);
const KEYPAIRS = "/compute/v2.1/os-keypairs";

export class KeypairsPage {
  constructor(app) {
    this.app = app;
    this.download = null;
    $("keypair-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  async show() {
    const listed = await this.app.attempt(() => this.app.api.get(KEYPAIRS), null);
    if (!listed) return;
    this.render(listed.keypairs.map((entry) => entry.keypair));
  }

  render(keypairs) {
    $("keypair-rows").replaceChildren(
      ...keypairs.map((keypair) => {
        const tr = document.createElement("tr");
        tr.dataset.name = keypair.name;
        const name = document.createElement("th");
        name.scope = "row";
        name.textContent = keypair.name;
        const type = document.createElement("td");
        type.textContent = keypair.type || "ssh";
        const fingerprint = document.createElement("td");
        fingerprint.textContent = keypair.fingerprint;
        const actions = document.createElement("td");
        const remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "Delete";
        remove.setAttribute("aria-label", `Delete key pair ${keypair.name}`);
        remove.addEventListener("click", () => this.remove(keypair.name));
        actions.append(remove);
        tr.append(name, type, fingerprint, actions);
        return tr;
      }),
    );
  }

  async create() {
    const form = $("keypair-form");
    const data = new FormData(form);
    const keypair = { name: data.get("name") };
    const publicKey = (data.get("public_key") || "").trim();
    if (publicKey) keypair.public_key = publicKey;
    const created = await this.app.attempt(() => this.app.api.post(KEYPAIRS, { keypair }), null);
    if (!created) return;
    form.reset();
    this.showPrivateKey(created.keypair);
    this.app.announce(`Key pair ${keypair.name} ${publicKey ? "imported" : "created"}.`);
    await this.show();
  }

  /** A generated key pair's private key, shown this once with a link to save it. */
  showPrivateKey(keypair) {
    const shown = $("private-key");
    if (this.download) URL.revokeObjectURL(this.download);
    this.download = null;
    shown.hidden = !keypair.private_key;
    if (!keypair.private_key) return;
    $("private-key-text").value = keypair.private_key;
    this.download = URL.createObjectURL(new Blob([keypair.private_key], { type: "application/x-pem-file" }));
    const link = $("private-key-save");
    link.href = this.download;
    link.download = `${keypair.name}.pem`;
    $("private-key-text").focus();
  }

  async remove(name) {
    if (!confirm(`Delete key pair ${name}?`)) return;
    const done = await this.app.attempt(
      () => this.app.api.del(`${KEYPAIRS}/${encodeURIComponent(name)}`),
      `Deleting key pair ${name}`,
    );
    if (done !== null) await this.show();
  }
}
