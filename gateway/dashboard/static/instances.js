// The instances page: the live table (one row per instance, changed in place by the store's
// changes), its row actions, and the launch form.

import { addressText } from "./store.js";

const $ = (id) => document.getElementById(id);

/** The actions a row offers, each with the statuses it is offered in (``admin``: to admins only). */
export const ACTIONS = [
  { name: "Start", body: { "os-start": null }, when: ["SHUTOFF"] },
  { name: "Stop", body: { "os-stop": null }, when: ["ACTIVE", "ERROR"] },
  { name: "Reboot", body: { reboot: { type: "SOFT" } }, when: ["ACTIVE"] },
  { name: "Confirm resize", body: { confirmResize: null }, when: ["VERIFY_RESIZE"] },
  { name: "Revert resize", body: { revertResize: null }, when: ["VERIFY_RESIZE"] },
  {
    name: "Live migrate",
    body: { "os-migrateLive": { host: null, block_migration: "auto" } },
    when: ["ACTIVE"],
    admin: true,
  },
  { name: "Migrate", body: { migrate: null }, when: ["ACTIVE", "SHUTOFF"], admin: true },
  { name: "Delete", body: null, when: null },
];

/** Run one of ACTIONS on an instance (asks first for Delete); the result comes as events. */
export async function runAction(app, instance, action) {
  if (action.body === null) {
    if (!confirm(`Delete instance ${instance.name}?`)) return;
    await app.attempt(() => app.api.deleteServer(instance.id), `Deleting ${instance.name}`);
    return;
  }
  await app.attempt(() => app.api.serverAction(instance.id, action.body), `${action.name}: ${instance.name}`);
}

/** Buttons for ACTIONS, each enabled when the instance's status allows it. */
export function actionButtons(app, getInstance) {
  return ACTIONS.map((action) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action.name;
    button.dataset.action = action.name.toLowerCase().replace(" ", "-");
    if (action.admin) button.className = "admin-only";
    button.addEventListener("click", () => runAction(app, getInstance(), action));
    return { action, button };
  });
}

export function updateButtons(buttons, instance) {
  for (const { action, button } of buttons) {
    button.disabled = Boolean(instance.task) || (action.when !== null && !action.when.includes(instance.status));
    button.setAttribute("aria-label", `${action.name} ${instance.name}`);
  }
}

export class InstancesPage {
  constructor(app) {
    this.app = app;
    this.rows = new Map();
    this.body = $("instance-rows");
    app.store.subscribe((change) => this.changed(change));
    $("launch-open").addEventListener("click", () => this.openLaunch());
    $("launch-cancel").addEventListener("click", () => this.closeLaunch());
    $("launch-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.launch();
    });
  }

  render() {
    const fragment = document.createDocumentFragment();
    this.rows.clear();
    const sorted = [...this.app.store.instances.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const instance of sorted) fragment.append(this.row(instance));
    this.body.replaceChildren(fragment);
    this.showEmpty();
  }

  showEmpty() {
    $("no-instances").hidden = this.rows.size > 0;
  }

  row(instance) {
    const tr = document.createElement("tr");
    tr.dataset.id = instance.id;
    const nameCell = document.createElement("th");
    nameCell.scope = "row";
    const link = document.createElement("a");
    link.href = `#/instances/${instance.id}`;
    nameCell.append(link);
    const cells = { name: link };
    tr.append(nameCell);
    for (const field of ["status", "task", "addresses", "host"]) {
      const td = document.createElement("td");
      td.dataset.field = field;
      if (field === "host") td.className = "admin-only";
      cells[field] = td;
      tr.append(td);
    }
    const actions = document.createElement("td");
    actions.className = "buttons";
    const buttons = actionButtons(this.app, () => this.app.store.instances.get(instance.id) || instance);
    actions.append(...buttons.map(({ button }) => button));
    tr.append(actions);
    const row = { tr, cells, buttons };
    this.rows.set(instance.id, row);
    this.fill(row, instance);
    return tr;
  }

  fill(row, instance) {
    row.cells.name.textContent = instance.name;
    row.cells.status.textContent = instance.status;
    row.cells.status.dataset.status = instance.status;
    row.cells.task.textContent = instance.task || "";
    row.cells.addresses.textContent = addressText(instance.addresses);
    row.cells.host.textContent = instance.host || "";
    updateButtons(row.buttons, instance);
  }

  changed(change) {
    if (change.kind === "reset") {
      this.render();
      return;
    }
    const { instance, before } = change;
    const row = this.rows.get(instance.id);
    if (change.kind === "gone") {
      if (row) row.tr.remove();
      this.rows.delete(instance.id);
      this.showEmpty();
      this.app.announce(`Instance ${instance.name} was deleted.`);
      return;
    }
    if (row) this.fill(row, instance);
    else this.insert(instance);
    if (before && before.status !== instance.status) {
      this.app.announce(`Instance ${instance.name} is now ${instance.status}.`);
    }
  }

  insert(instance) {
    const tr = this.row(instance);
    const after = [...this.rows.values()].find(
      (row) => row.tr.isConnected && row.cells.name.textContent.localeCompare(instance.name) > 0,
    );
    this.body.insertBefore(tr, after ? after.tr : null);
    this.showEmpty();
  }

  async openLaunch() {
    const form = $("launch-form");
    form.hidden = false;
    $("launch-open").setAttribute("aria-expanded", "true");
    const api = this.app.api;
    const loaded = await this.app.attempt(
      () =>
        Promise.all([
          api.get("/image/v2/images?status=active"),
          api.get("/compute/v2.1/flavors/detail"),
          api.get("/network/v2.0/networks"),
          api.get("/compute/v2.1/os-keypairs"),
          api.get(`/network/v2.0/security-groups?project_id=${this.app.session.project.id}`),
          api.get(`/volume/v3/${this.app.session.project.id}/volumes/detail?status=available`),
        ]),
      null,
    );
    if (!loaded) return;
    const [images, flavors, networks, keypairs, groups, volumes] = loaded;
    fillSelect($("launch-image"), images.images, (image) => [image.id, image.name]);
    fillSelect($("launch-flavor"), flavors.flavors, (flavor) => [
      flavor.id,
      `${flavor.name} (${flavor.vcpus} vCPU, ${flavor.ram} MiB, ${flavor.disk} GiB)`,
    ]);
    fillSelect($("launch-network"), networks.networks, (network) => [network.id, network.name], "Default network");
    fillSelect(
      $("launch-keypair"),
      keypairs.keypairs.map((entry) => entry.keypair),
      (keypair) => [keypair.name, keypair.name],
      "None",
    );
    fillSelect(
      $("launch-volume"),
      volumes.volumes,
      (volume) => [volume.id, `${volume.name || volume.id} (${volume.size} GiB)`],
      "None",
    );
    const fieldset = $("launch-groups");
    fieldset.replaceChildren(fieldset.querySelector("legend"));
    for (const group of groups.security_groups) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "security_group";
      box.value = group.name;
      box.defaultChecked = group.name === "default";
      label.append(box, ` ${group.name}`);
      fieldset.append(label);
    }
    $("launch-name").focus();
  }

  closeLaunch() {
    $("launch-form").hidden = true;
    $("launch-open").setAttribute("aria-expanded", "false");
    $("launch-open").focus();
  }

  async launch() {
    const form = $("launch-form");
    const data = new FormData(form);
    const server = { name: data.get("name"), imageRef: data.get("image"), flavorRef: data.get("flavor") };
    if (data.get("network")) server.networks = [{ uuid: data.get("network") }];
    if (data.get("keypair")) server.key_name = data.get("keypair");
    const groups = data.getAll("security_group");
    if (groups.length) server.security_groups = groups.map((name) => ({ name }));
    if (data.get("volume")) {
      server.block_device_mapping_v2 = [
        { source_type: "volume", destination_type: "volume", uuid: data.get("volume"), boot_index: -1 },
      ];
    }
    const created = await this.app.attempt(
      () => this.app.api.post("/compute/v2.1/servers", { server }),
      `Launching ${server.name}`,
    );
    if (!created) return;
    this.app.store.expect(created.server.id, server.name);
    form.reset();
    this.closeLaunch();
  }
}

/** Fill a select with ``items`` (each made [value, text] by ``option``), after an empty choice if named. */
function fillSelect(select, items, option, emptyText = null) {
  const options = [];
  if (emptyText !== null) options.push(new Option(emptyText, ""));
  for (const item of items) {
    const [value, text] = option(item);
    options.push(new Option(text, value));
  }
  select.replaceChildren(...options);
}
