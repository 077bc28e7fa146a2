// The network page. Routers (with their interfaces) and security groups (with their rules) are
// read once per session and then kept up to date by the stream's router and security_group
// events; networks with their subnets and floating IPs (no events) are read when the page opens,
// on Refresh and after each change the page makes to them. A network is made with its subnet; a
// floating IP is allocated from an external network and released; a router is made and deleted,
// given an external gateway and interfaces on subnets and has them taken away again; a security
// group is made, given rules, has them deleted and is deleted.

import { LiveCollection, LiveTable } from "./live.js";

const $ = (id) => document.getElementById(id);
const INTERFACE_OWNER = "network:router_interface";
const NET = "/network/v2.0";

function button(text, label, run) {
  const made = document.createElement("button");
  made.type = "button";
  made.textContent = text;
  made.setAttribute("aria-label", label);
  made.addEventListener("click", run);
  return made;
}

/**
 * Fill ``tbody`` with one row per item, a cell per function of ``cells`` (the first a header), and
 * when ``actions`` is given a last cell of the buttons ``actions(item)`` makes.
 */
function fillTable(tbody, items, cells, empty, actions = null) {
  const width = cells.length + (actions ? 1 : 0);
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = width;
    td.textContent = empty;
    tr.append(td);
    tbody.replaceChildren(tr);
    return;
  }
  tbody.replaceChildren(
    ...items.map((item) => {
      const tr = document.createElement("tr");
      cells.forEach((cell, index) => {
        const element = document.createElement(index === 0 ? "th" : "td");
        if (index === 0) element.scope = "row";
        element.textContent = cell(item);
        tr.append(element);
      });
      if (actions) {
        const td = document.createElement("td");
        const buttons = document.createElement("div");
        buttons.className = "buttons";
        buttons.append(...actions(item));
        td.append(buttons);
        tr.append(td);
      }
      return tr;
    }),
  );
}

/** A security group rule as one phrase: "ingress tcp 22 from 0.0.0.0/0". */
export function ruleText(rule) {
  const ports =
    rule.port_range_min === null || rule.port_range_min === undefined
      ? ""
      : rule.port_range_min === rule.port_range_max
        ? ` ${rule.port_range_min}`
        : ` ${rule.port_range_min}-${rule.port_range_max}`;
  const remote = rule.remote_ip_prefix || (rule.remote_group_id ? "the group" : "anywhere");
  const way = rule.direction === "ingress" ? "from" : "to";
  return `${rule.direction} ${rule.ethertype} ${rule.protocol || "any"}${ports} ${way} ${remote}`;
}

/** The routers of a listing with their ``interfaces`` (as the router events give them) from the interface ports. */
export function withInterfaces(routers, ports) {
  const interfaces = new Map();
  for (const port of ports) {
    const held = port.fixed_ips.map((fixed) => ({ port_id: port.id, ...fixed }));
    interfaces.set(port.device_id, [...(interfaces.get(port.device_id) || []), ...held]);
  }
  return routers.map((router) => ({ ...router, interfaces: interfaces.get(router.id) || [] }));
}

/** The options of a select, keeping its choice when it is still one of them. */
function fillSelect(select, options) {
  const chosen = select.value;
  select.replaceChildren(...options.map(([text, value]) => new Option(text, value)));
  if (options.some(([, value]) => value === chosen)) select.value = chosen;
}

export class NetworksPage {
  constructor(app) {
    this.app = app;
    this.routers = new LiveCollection("router");
    this.groups = new LiveCollection("security_group");
    this.networkNames = new Map();
    this.subnets = new Map();
    this.external = [];
    this.loading = false;
    this.routerTable = new LiveTable(app, this.routers, $("router-rows"), {
      noun: "Router",
      columns: [
        { field: "name", text: (router) => router.name || router.id },
        { field: "gateway", text: (router) => this.gatewayText(router) },
        { field: "interfaces", text: (router) => (router.interfaces || []).map((held) => held.ip_address).join(", ") },
        { field: "status", text: (router) => router.status },
      ],
      actions: (router) => [
        {
          name: "Clear gateway",
          label: `Clear the external gateway of router ${this.routerTable.name(router)}`,
          run: () => this.setGateway(router, null),
          enabled: Boolean(router.external_gateway_info),
        },
        {
          name: "Delete",
          label: `Delete router ${this.routerTable.name(router)}`,
          run: () => this.deleteRouter(router),
          enabled: true,
        },
      ],
    });
    this.groupTable = new LiveTable(app, this.groups, $("security-group-rows"), {
      noun: "Security group",
      columns: [
        { field: "name", text: (group) => group.name },
        { field: "rules", text: (group) => (group.security_group_rules || []).map(ruleText).sort().join("; ") },
        { field: "description", text: (group) => group.description || "" },
      ],
      actions: (group) => [
        {
          name: "Delete",
          label: `Delete security group ${group.name}`,
          run: () => this.deleteGroup(group),
          enabled: group.name !== "default",
        },
      ],
    });
    this.routers.subscribe(() => this.routersChanged());
    this.groups.subscribe(() => this.groupsChanged());
    $("network-refresh").addEventListener("click", () => this.show());
    this.form("network-form", (data) => this.createNetwork(data));
    this.form("allocate-form", (data) => this.allocate(data));
    this.form("router-form", (data) => this.createRouter(data));
    this.form("gateway-form", (data) =>
      this.setGateway(this.routers.items.get(data.get("router")), data.get("network")),
    );
    this.form("interface-form", (data) => this.addInterface(data));
    this.form("group-form", (data) => this.createGroup(data));
    this.form("rule-form", (data) => this.addRule(data));
  }

  /** Another session: the routers and groups are read again when the page next opens. */
  unload() {
    this.routers.unload();
    this.groups.unload();
  }

  form(id, submit) {
    $(id).addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await submit(new FormData($(id)))) $(id).reset();
    });
  }

  /** Run a change of the page's (announced), then read everything again; whether it was done. */
  async change(work, announcement) {
    const done = await this.app.attempt(work, announcement);
    if (done === null) return false;
    await this.show();
    return true;
  }

  async remove(path, what) {
    if (!confirm(`Delete ${what}?`)) return;
    await this.change(() => this.app.api.del(path), `Deleting ${what}`);
  }

  gatewayText(router) {
    const gateway = router.external_gateway_info;
    return gateway ? this.networkNames.get(gateway.network_id) || gateway.network_id : "none";
  }

  subnetText(subnetId) {
    const subnet = this.subnets.get(subnetId);
    return subnet ? `${subnet.name || subnet.id} (${subnet.cidr})` : subnetId;
  }

  /** The listings without events, read each time; routers and groups once per session. */
  async show() {
    const api = this.app.api;
    const session = this.app.session;
    const project = session.project.id;
    const firstTime = !this.routers.loaded && !this.loading;
    this.loading ||= firstTime;
    try {
      const loaded = await this.app.attempt(
        () =>
          Promise.all([
            api.get(`${NET}/networks`),
            api.get(`${NET}/subnets`),
            api.get(`${NET}/floatingips`),
            ...(firstTime
              ? [
                  api.get(`${NET}/routers?project_id=${project}`),
                  api.get(`${NET}/ports?device_owner=${INTERFACE_OWNER}&project_id=${project}`),
                  api.get(`${NET}/security-groups?project_id=${project}`),
                ]
              : []),
          ]),
        null,
      );
      if (!loaded || session !== this.app.session) return;
      const [networks, subnets, floatingIps, routers, ports, groups] = loaded;
      this.showNetworks(networks.networks, subnets.subnets, floatingIps.floatingips);
      if (firstTime) {
        this.routers.load(withInterfaces(routers.routers, ports.ports));
        this.groups.load(groups.security_groups);
      } else {
        this.routerTable.render(); // the networks' and subnets' names may have changed
        this.routersChanged();
      }
    } finally {
      if (firstTime) this.loading = false;
    }
  }

  showNetworks(networks, subnets, floatingIps) {
    const project = this.app.session.project.id;
    const cidrs = new Map();
    for (const subnet of subnets) {
      cidrs.set(subnet.network_id, [...(cidrs.get(subnet.network_id) || []), subnet.cidr]);
    }
    this.networkNames = new Map(networks.map((network) => [network.id, network.name]));
    this.subnets = new Map(subnets.map((subnet) => [subnet.id, subnet]));
    fillTable(
      $("networks-rows"),
      networks,
      [
        (network) => network.name,
        (network) => (cidrs.get(network.id) || []).join(", "),
        (network) => (network["router:external"] ? "external" : network.shared ? "shared" : "project"),
        (network) => network.status,
      ],
      "No networks.",
      (network) =>
        network.project_id === project
          ? [
              button("Delete", `Delete network ${network.name}`, () =>
                this.remove(`${NET}/networks/${network.id}`, `network ${network.name}`),
              ),
            ]
          : [],
    );
    fillTable(
      $("floating-ip-rows"),
      floatingIps,
      [
        (floating) => floating.floating_ip_address,
        (floating) => floating.fixed_ip_address || "not associated",
        (floating) => floating.status,
      ],
      "No floating IPs.",
      (floating) => [
        button("Release", `Release floating IP ${floating.floating_ip_address}`, () =>
          this.remove(`${NET}/floatingips/${floating.id}`, `floating IP ${floating.floating_ip_address}`),
        ),
      ],
    );
    this.external = networks.filter((network) => network["router:external"]);
    const externalOptions = this.external.map((network) => [network.name, network.id]);
    fillSelect($("allocate-network"), externalOptions);
    $("allocate-submit").disabled = !this.external.length;
    fillSelect($("router-network"), [["none", ""], ...externalOptions]);
    fillSelect($("gateway-network"), externalOptions);
    const inner = subnets.filter((subnet) => !this.external.some((network) => network.id === subnet.network_id));
    fillSelect($("interface-subnet"), inner.map((subnet) => [this.subnetText(subnet.id), subnet.id]));
  }

  /** A router event (or the listing): the router choices and the interfaces table. */
  routersChanged() {
    const routers = [...this.routers.items.values()].sort((a, b) =>
      this.routerTable.name(a).localeCompare(this.routerTable.name(b)),
    );
    const options = routers.map((router) => [this.routerTable.name(router), router.id]);
    fillSelect($("gateway-router"), options);
    fillSelect($("interface-router"), options);
    $("no-routers").hidden = !this.routers.loaded || routers.length > 0;
    $("gateway-submit").disabled = !routers.length || !this.external.length;
    $("interface-submit").disabled = !routers.length;
    const interfaces = routers.flatMap((router) => (router.interfaces || []).map((held) => ({ router, held })));
    fillTable(
      $("interface-rows"),
      interfaces,
      [
        ({ router }) => this.routerTable.name(router),
        ({ held }) => this.subnetText(held.subnet_id),
        ({ held }) => held.ip_address,
      ],
      "No router interfaces.",
      ({ router, held }) => [
        button(
          "Remove",
          `Remove the interface of router ${this.routerTable.name(router)} on ${this.subnetText(held.subnet_id)}`,
          () => this.removeInterface(router, held),
        ),
      ],
    );
  }

  /** A security group event (or the listing): the group choices and the rules table. */
  groupsChanged() {
    const groups = [...this.groups.items.values()].sort((a, b) => a.name.localeCompare(b.name));
    fillSelect($("rule-group"), groups.map((group) => [group.name, group.id]));
    const rules = groups.flatMap((group) => (group.security_group_rules || []).map((rule) => ({ group, rule })));
    rules.sort((a, b) => a.group.name.localeCompare(b.group.name) || ruleText(a.rule).localeCompare(ruleText(b.rule)));
    fillTable(
      $("rule-rows"),
      rules,
      [({ group }) => group.name, ({ rule }) => ruleText(rule)],
      "No rules.",
      ({ group, rule }) => [
        button("Delete", `Delete rule ${ruleText(rule)} of ${group.name}`, () => this.deleteRule(group, rule)),
      ],
    );
  }

  createNetwork(data) {
    const name = data.get("name");
    return this.change(() => this.makeNetwork(name, data.get("cidr")), `Creating network ${name}`);
  }

  /** A network and its one subnet; the network is deleted again when the subnet is refused. */
  async makeNetwork(name, cidr) {
    const made = await this.app.api.post(`${NET}/networks`, { network: { name } });
    const subnet = { network_id: made.network.id, cidr, ip_version: 4, name: `${name}-subnet` };
    try {
      await this.app.api.post(`${NET}/subnets`, { subnet });
    } catch (error) {
      await this.app.api.del(`${NET}/networks/${made.network.id}`).catch(() => null);
      throw error;
    }
    return made;
  }

  async allocate(data) {
    const floatingip = { floating_network_id: data.get("network") };
    return this.change(() => this.app.api.post(`${NET}/floatingips`, { floatingip }), "Allocating a floating IP");
  }

  /** A change of a router or a security group (their events show it): whether it was done. */
  async send(work, announcement, collection = null) {
    const made = await this.app.attempt(work, announcement);
    if (made === null) return false;
    if (collection) collection.expect(made);
    return true;
  }

  createRouter(data) {
    const router = { name: data.get("name") };
    if (data.get("network")) router.external_gateway_info = { network_id: data.get("network") };
    return this.send(
      async () => ({ interfaces: [], ...(await this.app.api.post(`${NET}/routers`, { router })).router }),
      `Creating router ${router.name}`,
      this.routers,
    );
  }

  /** Give ``router`` the external gateway of network ``networkId`` (null: clear it). */
  setGateway(router, networkId) {
    if (!router) return false;
    const name = this.routerTable.name(router);
    const external_gateway_info = networkId ? { network_id: networkId } : {};
    return this.send(
      () => this.app.api.put(`${NET}/routers/${router.id}`, { router: { external_gateway_info } }),
      networkId ? `Setting the gateway of router ${name}` : `Clearing the gateway of router ${name}`,
    );
  }

  async deleteRouter(router) {
    const name = this.routerTable.name(router);
    if (!confirm(`Delete router ${name}?`)) return;
    if (await this.send(() => this.app.api.del(`${NET}/routers/${router.id}`), `Deleting router ${name}`)) {
      $("router-title").focus();
    }
  }

  addInterface(data) {
    const router = this.routers.items.get(data.get("router"));
    if (!router) return false;
    const body = { subnet_id: data.get("subnet") };
    return this.send(
      () => this.app.api.put(`${NET}/routers/${router.id}/add_router_interface`, body),
      `Adding an interface to router ${this.routerTable.name(router)}`,
    );
  }

  async removeInterface(router, held) {
    const body = { port_id: held.port_id };
    const removed = await this.send(
      () => this.app.api.put(`${NET}/routers/${router.id}/remove_router_interface`, body),
      `Removing an interface of router ${this.routerTable.name(router)}`,
    );
    if (removed) $("interfaces-title").focus();
  }

  createGroup(data) {
    const group = { name: data.get("name"), description: data.get("description") || "" };
    return this.send(
      async () => (await this.app.api.post(`${NET}/security-groups`, { security_group: group })).security_group,
      `Creating security group ${group.name}`,
      this.groups,
    );
  }

  async deleteGroup(group) {
    if (!confirm(`Delete security group ${group.name}?`)) return;
    const path = `${NET}/security-groups/${group.id}`;
    if (await this.send(() => this.app.api.del(path), `Deleting security group ${group.name}`)) {
      $("security-group-title").focus();
    }
  }

  addRule(data) {
    const rule = { security_group_id: data.get("group"), direction: data.get("direction"), ethertype: "IPv4" };
    if (data.get("protocol")) rule.protocol = data.get("protocol");
    if (data.get("port")) {
      rule.port_range_min = Number(data.get("port"));
      rule.port_range_max = Number(data.get("port"));
    }
    if (data.get("remote")) rule.remote_ip_prefix = data.get("remote");
    return this.send(
      () => this.app.api.post(`${NET}/security-group-rules`, { security_group_rule: rule }),
      "Adding a rule",
    );
  }

  async deleteRule(group, rule) {
    const text = `rule ${ruleText(rule)} of ${group.name}`;
    if (!confirm(`Delete ${text}?`)) return;
    if (await this.send(() => this.app.api.del(`${NET}/security-group-rules/${rule.id}`), `Deleting ${text}`)) {
      $("rules-title").focus();
    }
  }
}
