// The network page: networks with their subnets, routers, floating IPs and security groups with
// their rules, as the network service lists them when the page opens, on Refresh and after each
// change the page makes (they have no events to follow). A network is made with its subnet; a
// floating IP is allocated from an external network and released; a security group is made,
// given rules and deleted.

const $ = (id) => document.getElementById(id);
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

export class NetworksPage {
  constructor(app) {
    this.app = app;
    $("network-refresh").addEventListener("click", () => this.show());
    this.form("network-form", (data) => this.createNetwork(data));
    this.form("allocate-form", (data) => this.allocate(data));
    this.form("group-form", (data) => this.createGroup(data));
    this.form("rule-form", (data) => this.addRule(data));
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

  async show() {
    const api = this.app.api;
    const project = this.app.session.project.id;
    const loaded = await this.app.attempt(
      () =>
        Promise.all([
          api.get(`${NET}/networks`),
          api.get(`${NET}/subnets`),
          api.get(`${NET}/routers`),
          api.get(`${NET}/floatingips`),
          api.get(`${NET}/security-groups?project_id=${project}`),
        ]),
      null,
    );
    if (!loaded) return;
    const [networks, subnets, routers, floatingIps, groups] = loaded;
    const cidrs = new Map();
    for (const subnet of subnets.subnets) {
      cidrs.set(subnet.network_id, [...(cidrs.get(subnet.network_id) || []), subnet.cidr]);
    }
    const networkName = new Map(networks.networks.map((network) => [network.id, network.name]));
    fillTable(
      $("networks-rows"),
      networks.networks,
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
      $("router-rows"),
      routers.routers,
      [
        (router) => router.name || router.id,
        (router) => {
          const gateway = router.external_gateway_info;
          return gateway ? networkName.get(gateway.network_id) || gateway.network_id : "none";
        },
        (router) => router.status,
      ],
      "No routers.",
    );
    fillTable(
      $("floating-ip-rows"),
      floatingIps.floatingips,
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
    fillTable(
      $("security-group-rows"),
      groups.security_groups,
      [
        (group) => group.name,
        (group) => (group.security_group_rules || []).map(ruleText).sort().join("; "),
        (group) => group.description || "",
      ],
      "No security groups.",
      (group) =>
        group.name === "default"
          ? []
          : [
              button("Delete", `Delete security group ${group.name}`, () =>
                this.remove(`${NET}/security-groups/${group.id}`, `security group ${group.name}`),
              ),
            ],
    );
    const external = networks.networks.filter((network) => network["router:external"]);
    $("allocate-network").replaceChildren(...external.map((network) => new Option(network.name, network.id)));
    $("allocate-submit").disabled = !external.length;
    const chosen = $("rule-group").value;
    $("rule-group").replaceChildren(...groups.security_groups.map((group) => new Option(group.name, group.id)));
    if (groups.security_groups.some((group) => group.id === chosen)) $("rule-group").value = chosen;
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

  async createGroup(data) {
    const group = { name: data.get("name"), description: data.get("description") || "" };
    return this.change(
      () => this.app.api.post(`${NET}/security-groups`, { security_group: group }),
      `Creating security group ${group.name}`,
    );
  }

  async addRule(data) {
    const rule = { security_group_id: data.get("group"), direction: data.get("direction"), ethertype: "IPv4" };
    if (data.get("protocol")) rule.protocol = data.get("protocol");
    if (data.get("port")) {
      rule.port_range_min = Number(data.get("port"));
      rule.port_range_max = Number(data.get("port"));
    }
    if (data.get("remote")) rule.remote_ip_prefix = data.get("remote");
    return this.change(
      () => this.app.api.post(`${NET}/security-group-rules`, { security_group_rule: rule }),
      "Adding a rule",
    );
  }
}
