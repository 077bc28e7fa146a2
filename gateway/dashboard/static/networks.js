// The network page: networks with their subnets, routers, floating IPs and security groups, as the
// network service lists them when the page opens (or on Refresh): they have no events to follow.

const $ = (id) => document.getElementById(id);

/** Fill ``tbody`` with one row per item, a cell per function of ``cells`` (the first a header). */
function fillTable(tbody, items, cells, empty) {
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = cells.length;
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
      return tr;
    }),
  );
}

export class NetworksPage {
  constructor(app) {
    this.app = app;
    $("network-refresh").addEventListener("click", () => this.show());
  }

  async show() {
    const api = this.app.api;
    const loaded = await this.app.attempt(
      () =>
        Promise.all([
          api.get("/network/v2.0/networks"),
          api.get("/network/v2.0/subnets"),
          api.get("/network/v2.0/routers"),
          api.get("/network/v2.0/floatingips"),
          api.get(`/network/v2.0/security-groups?project_id=${this.app.session.project.id}`),
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
    );
    fillTable(
      $("security-group-rows"),
      groups.security_groups,
      [
        (group) => group.name,
        (group) => String((group.security_group_rules || []).length),
        (group) => group.description || "",
      ],
      "No security groups.",
    );
  }
}
