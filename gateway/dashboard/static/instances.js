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
    $("launch-source").addEventListener("change", () => this.showSource());
    $("launch-form").addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.closeLaunch();
    });
  }

  /** The fields of the chosen boot source only: an image, its volume's size, or a bootable volume. */
  showSource() {
    const source = $("launch-source").value;
    $("launch-image-field").hidden = source === "volume";
    $("launch-image").required = source !== "volume";
    $("launch-boot-size-field").hidden = source !== "new-volume";
    $("launch-boot-volume-field").hidden = source !== "volume";
    $("launch-boot-volume").required = source === "volume";
  }

  render() {
    const fragment = document.createDocumentFragment();
    this.rows.clear();
    const sorted = [...this.app.store.items.values()].sort((a, b) => a.name.localeCompare(b.name));
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
    const buttons = actionButtons(this.app, () => this.app.store.items.get(instance.id) || instance);
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
    const { item: instance, before } = change;
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
    const volumeOption = (volume) => [volume.id, `${volume.name || volume.id} (${volume.size} GiB)`];
    fillSelect($("launch-volume"), volumes.volumes, volumeOption, "None");
    fillSelect(
      $("launch-boot-volume"),
      volumes.volumes.filter((volume) => volume.bootable === "true"),
      volumeOption,
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
    this.showSource();
    $("launch-name").focus();
  }

  closeLaunch() {
    $("launch-form").hidden = true;
    $("launch-open").setAttribute("aria-expanded", "false");
    $("launch-open").focus();
  }

  /**
   * Boot what the form says. A volume it makes (to boot from, or a new empty one to attach) is made
   * first and waited for (its ``volume.available`` event); it is deleted with the instance, and at
   * once when the boot is refused.
   */
  async launch() {
    const form = $("launch-form");
    const data = new FormData(form);
    const name = data.get("name");
    const server = { name, flavorRef: data.get("flavor") };
    if (data.get("network")) server.networks = [{ uuid: data.get("network") }];
    if (data.get("keypair")) server.key_name = data.get("keypair");
    const groups = data.getAll("security_group");
    if (groups.length) server.security_groups = groups.map((group) => ({ name: group }));
    const made = [];
    const watch = this.app.watchEvents("volume");
    try {
      const mappings = await this.mappings(data, name, made, watch);
      if (!mappings) return this.forget(made);
      if (data.get("source") === "image") server.imageRef = data.get("image");
      if (mappings.length) server.block_device_mapping_v2 = mappings;
      const created = await this.app.attempt(
        () => this.app.api.post("/compute/v2.1/servers", { server }),
        `Launching ${name}`,
      );
      if (!created) return this.forget(made);
      this.app.store.expect({
        id: created.server.id,
        name,
        status: "BUILD",
        task: "scheduling",
        addresses: {},
        host: null,
        flavor: null,
      });
      form.reset();
      this.closeLaunch();
    } finally {
      watch.stop();
    }
  }

  /** The form's block device mappings, the volumes they need made (their ids added to ``made``);
   * null when one could not be made. */
  async mappings(data, name, made, watch) {
    const mappings = [];
    const mapping = (uuid, bootIndex, deleteWithServer) => ({
      source_type: "volume",
      destination_type: "volume",
      uuid,
      boot_index: bootIndex,
      delete_on_termination: deleteWithServer,
    });
    const source = data.get("source");
    if (source === "volume") mappings.push(mapping(data.get("boot_volume"), 0, false));
    if (source === "new-volume") {
      const size = Number(data.get("boot_size"));
      const volume = { name: `${name}-boot`, size, imageRef: data.get("image") };
      const id = await this.makeVolume(volume, made, watch);
      if (!id) return null;
      mappings.push(mapping(id, 0, true));
    }
    if (data.get("volume")) mappings.push(mapping(data.get("volume"), -1, false));
    if (data.get("new_volume")) {
      const volume = { name: `${name}-data`, size: Number(data.get("new_volume")) };
      const id = await this.makeVolume(volume, made, watch);
      if (!id) return null;
      mappings.push(mapping(id, -1, true));
    }
    return mappings;
  }

  /** A new volume, once available (its id, also added to ``made``); null when it failed. The volume
   * service answers once it is made; its event is waited for when the answer says it is not yet. */
  async makeVolume(volume, made, watch) {
    const path = `/volume/v3/${this.app.session.project.id}/volumes`;
    const created = await this.app.attempt(
      () => this.app.api.post(path, { volume }),
      `Creating volume ${volume.name}`,
    );
    if (!created) return null;
    const id = created.volume.id;
    made.push(id);
    let status = created.volume.status;
    if (!["available", "error"].includes(status)) {
      const settled = await watch.until(
        (event) => event.id === id && ["volume.available", "volume.error"].includes(event.type),
      );
      status = settled.state.status;
    }
    if (status === "error") {
      this.app.showError(`The volume ${volume.name} could not be made.`);
      return null;
    }
    return id;
  }

  /** Delete the volumes made for a boot that did not happen (the boot's error stays shown; a volume
   * that cannot be deleted stays on the volumes page). */
  async forget(made) {
    const path = `/volume/v3/${this.app.session.project.id}/volumes`;
    for (const id of made) await this.app.api.del(`${path}/${id}`).catch(() => null);
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
