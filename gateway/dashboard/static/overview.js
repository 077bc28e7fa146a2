// The overview: the project's quotas (compute limits) and usage, and for admins each hypervisor's
// vCPUs and RAM (charts) and each compute service. What follows events: hypervisors and services
// take node.up/node.down in place (the event carries the host's whole view), and an instance
// settling (any project's, on the page's own admin socket) has the hypervisors read again; the
// quotas are read again when an instance of the project settles. The usage report (hours so far)
// has no event: it is read when the page opens and on Refresh, never by a timer.

import { barChart } from "./chart.js";
import { EventStream } from "./events.js";
import { isAdmin } from "./api.js";

const $ = (id) => document.getElementById(id);
const USAGE_DAYS = 30;

/** An instance event that ends a change (a status, not a task in progress). */
export function settles(event) {
  return event.kind === "instance" && (event.type === "instance.deleted" || !event.state.task_state);
}

/** ``read()`` again on request, one at a time: requests made while it runs make one more read. */
class Rereader {
  constructor(read) {
    this.read = read;
    this.running = false;
    this.again = false;
  }

  async request() {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      await this.read();
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.request();
      }
    }
  }
}

function cells(tr, texts) {
  texts.forEach((text, index) => {
    const cell = document.createElement(index === 0 ? "th" : "td");
    if (index === 0) cell.scope = "row";
    cell.textContent = text;
    tr.append(cell);
  });
  return tr;
}

/** Nova's time format for the usage report: UTC, no offset. */
function novaTime(date) {
  return date.toISOString().replace(/\.\d+Z$/, "");
}

export class OverviewPage {
  constructor(app) {
    this.app = app;
    this.stream = null;
    this.shown = false;
    this.hosts = new Map();
    this.services = new Map();
    this.quotas = new Rereader(() => this.loadQuotas());
    this.hypervisors = new Rereader(() => this.loadHypervisors());
    $("overview-refresh").addEventListener("click", () => this.load());
  }

  show() {
    this.shown = true;
    this.load();
    if (isAdmin(this.app.session) && !this.stream) this.follow();
  }

  hide() {
    this.shown = false;
    if (this.stream) this.stream.close();
    this.stream = null;
  }

  /** Everything read again (the page opens, or Refresh). */
  load() {
    const reads = [this.quotas.request(), this.loadUsage()];
    if (isAdmin(this.app.session)) reads.push(this.hypervisors.request());
    return Promise.all(reads);
  }

  /** An event of the session's own stream (the project's): its instances settling change the quotas' use. */
  projectEvent(event) {
    if (this.shown && settles(event)) this.quotas.request();
  }

  /** The admin's socket of node and instance events, every project's, while the page is shown. */
  follow() {
    const session = this.app.session;
    this.stream = new EventStream(
      session.token,
      {
        onEvent: (event) => this.cloudEvent(event),
        onSubscribed: () => this.hypervisors.request(),
        onState: (state) => {
          $("overview-link").textContent = state;
          $("overview-link").dataset.state = state;
        },
        onExpired: () => this.hypervisors.request(),
        onTokenInvalid: () => this.hide(),
      },
      { kinds: "node,instance" },
    );
    this.stream.open();
  }

  cloudEvent(event) {
    if (event.kind === "node") {
      const view = event.state;
      const known = this.hosts.get(view.host) || {};
      this.hosts.set(view.host, {
        ...known,
        hypervisor_hostname: view.host,
        state: view.alive ? "up" : "down",
        status: view.enabled ? "enabled" : "disabled",
        vcpus: view.vcpus,
        vcpus_used: view.vcpus_used,
        memory_mb: view.memory_mb,
        memory_mb_used: view.memory_mb_used,
        running_vms: view.instances,
      });
      const service = this.services.get(view.host) || { host: view.host, binary: "nova-compute" };
      this.services.set(view.host, {
        ...service,
        state: view.alive ? "up" : "down",
        status: view.enabled ? "enabled" : "disabled",
        disabled_reason: view.disabled_reason,
      });
      this.app.announce(`Host ${view.host} is ${view.alive ? "up" : "down"}.`);
      this.renderHosts();
    } else if (settles(event)) {
      this.hypervisors.request();
    }
  }

  async loadQuotas() {
    const listed = await this.app.attempt(() => this.app.api.get("/compute/v2.1/limits"), null);
    if (!listed) return;
    const limit = listed.limits.absolute;
    const of = (used, most, unit) => `${used} of ${most < 0 ? "unlimited" : most}${unit}`;
    $("quota-chart").replaceChildren(
      barChart(`Quotas of project ${this.app.session.project.name}`, [
        {
          label: "Instances",
          used: limit.totalInstancesUsed,
          total: limit.maxTotalInstances,
          text: of(limit.totalInstancesUsed, limit.maxTotalInstances, ""),
        },
        {
          label: "vCPUs",
          used: limit.totalCoresUsed,
          total: limit.maxTotalCores,
          text: of(limit.totalCoresUsed, limit.maxTotalCores, ""),
        },
        {
          label: "RAM",
          used: limit.totalRAMUsed,
          total: limit.maxTotalRAMSize,
          text: of(limit.totalRAMUsed, limit.maxTotalRAMSize, " MiB"),
        },
        {
          label: "Security groups",
          used: limit.totalSecurityGroupsUsed,
          total: limit.maxSecurityGroups,
          text: of(limit.totalSecurityGroupsUsed, limit.maxSecurityGroups, ""),
        },
      ]),
    );
  }

  async loadUsage() {
    const end = new Date();
    const start = new Date(end.getTime() - USAGE_DAYS * 86_400_000);
    const project = this.app.session.project.id;
    const path = `/compute/v2.1/os-simple-tenant-usage/${project}?start=${novaTime(start)}&end=${novaTime(end)}`;
    const shown = await this.app.attempt(() => this.app.api.get(path), null);
    if (!shown) return;
    const usage = shown.tenant_usage;
    const hours = (value) => (value ?? 0).toFixed(2);
    const facts = [
      ["Instance hours", hours(usage.total_hours)],
      ["vCPU hours", hours(usage.total_vcpus_usage)],
      ["RAM MiB hours", hours(usage.total_memory_mb_usage)],
      ["Disk GiB hours", hours(usage.total_local_gb_usage)],
    ];
    $("usage-facts").replaceChildren(
      ...facts.flatMap(([name, value]) => {
        const term = document.createElement("dt");
        term.textContent = name;
        const detail = document.createElement("dd");
        detail.textContent = value;
        detail.dataset.fact = name;
        return [term, detail];
      }),
    );
    $("usage-period").textContent = `The last ${USAGE_DAYS} days, as of ${end.toLocaleString()}.`;
  }

  async loadHypervisors() {
    const api = this.app.api;
    const loaded = await this.app.attempt(
      () => Promise.all([api.get("/compute/v2.1/os-hypervisors/detail"), api.get("/compute/v2.1/os-services")]),
      null,
    );
    if (!loaded) return;
    const [hypervisors, services] = loaded;
    this.hosts = new Map(hypervisors.hypervisors.map((hypervisor) => [hypervisor.hypervisor_hostname, hypervisor]));
    this.services = new Map(services.services.map((service) => [service.host, service]));
    this.renderHosts();
  }

  renderHosts() {
    const hosts = [...this.hosts.values()].sort((a, b) => a.hypervisor_hostname.localeCompare(b.hypervisor_hostname));
    const bars = (used, total, unit) =>
      hosts.map((host) => ({
        label: host.hypervisor_hostname,
        used: host[used],
        total: host[total],
        text: `${host[used]} of ${host[total]}${unit}`,
      }));
    $("hypervisor-charts").replaceChildren(
      barChart("vCPUs used by host", bars("vcpus_used", "vcpus", " vCPUs")),
      barChart("RAM used by host", bars("memory_mb_used", "memory_mb", " MiB")),
    );
    $("hypervisor-rows").replaceChildren(
      ...hosts.map((host) => {
        const tr = cells(document.createElement("tr"), [
          host.hypervisor_hostname,
          host.state,
          host.status,
          `${host.vcpus_used} / ${host.vcpus}`,
          `${host.memory_mb_used} / ${host.memory_mb} MiB`,
          String(host.running_vms),
        ]);
        tr.dataset.host = host.hypervisor_hostname;
        tr.children[1].dataset.field = "state";
        tr.children[1].dataset.state = host.state;
        return tr;
      }),
    );
    const services = [...this.services.values()].sort((a, b) => a.host.localeCompare(b.host));
    $("service-rows").replaceChildren(...services.map((service) => this.serviceRow(service)));
  }

  serviceRow(service) {
    const tr = cells(document.createElement("tr"), [
      service.host,
      service.binary,
      service.state,
      service.status,
      service.disabled_reason || "",
    ]);
    tr.dataset.host = service.host;
    tr.children[2].dataset.field = "state";
    tr.children[2].dataset.state = service.state;
    tr.children[3].dataset.field = "status";
    const enable = service.status === "disabled";
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = enable ? "Enable" : "Disable";
    button.setAttribute("aria-label", `${button.textContent} ${service.binary} on ${service.host}`);
    button.addEventListener("click", () => this.setEnabled(service, enable));
    const actions = document.createElement("td");
    actions.append(button);
    tr.append(actions);
    return tr;
  }

  /** Enable or disable a compute service (no event says so: its answer is shown). */
  async setEnabled(service, enable) {
    const body = { host: service.host, binary: service.binary };
    const path = `/compute/v2.1/os-services/${enable ? "enable" : "disable"}`;
    const verb = enable ? "Enabling" : "Disabling";
    const changed = await this.app.attempt(() => this.app.api.put(path, body), `${verb} ${service.host}`);
    if (!changed) return;
    const status = changed.service.status;
    this.services.set(service.host, { ...service, status, disabled_reason: changed.service.disabled_reason || null });
    const host = this.hosts.get(service.host);
    if (host) this.hosts.set(service.host, { ...host, status });
    this.renderHosts();
    this.app.announce(`${service.binary} on ${service.host} is now ${status}.`);
    document.querySelector(`#service-rows tr[data-host="${CSS.escape(service.host)}"] button`)?.focus();
  }
}
