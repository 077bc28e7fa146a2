// The dashboard: login, the project switch, the event stream feeding the instance store, and the
// pages (#/instances, #/instances/<id>, #/images, #/volumes, #/network, #/keypairs, #/overview,
// #/identity).

import { Api, forgetSession, isAdmin, loadSession, login, rescope } from "./api.js";
import { DetailPage } from "./detail.js";
import { EventStream, EventWatch } from "./events.js";
import { IdentityPage } from "./identity.js";
import { ImagesPage } from "./images.js";
import { InstancesPage } from "./instances.js";
import { KeypairsPage } from "./keypairs.js";
import { NetworksPage } from "./networks.js";
import { OverviewPage } from "./overview.js";
import { VolumesPage } from "./volumes.js";
import { instanceCollection } from "./store.js";

const $ = (id) => document.getElementById(id);
const VIEWS = [
  "login-view",
  "instances-view",
  "images-view",
  "volumes-view",
  "network-view",
  "keypairs-view",
  "overview-view",
  "identity-view",
  "detail-view",
];

class App {
  constructor() {
    this.session = null;
    this.api = null;
    this.stream = null;
    this.watches = new Set();
    this.store = instanceCollection();
    this.instancesPage = new InstancesPage(this);
    this.detailPage = new DetailPage(this);
    this.imagesPage = new ImagesPage(this);
    this.keypairsPage = new KeypairsPage(this);
    this.volumesPage = new VolumesPage(this);
    this.networksPage = new NetworksPage(this);
    this.overviewPage = new OverviewPage(this);
    this.identityPage = new IdentityPage(this);
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.logIn();
    });
    $("logout").addEventListener("click", () => this.logOut());
    $("project-switch").addEventListener("change", (event) => this.switchProject(event.target.value));
    window.addEventListener("hashchange", () => this.route());
  }

  start() {
    performance.mark("dashboard:started");
    const session = loadSession();
    if (session) this.begin(session);
    else this.showLogin();
  }

  show(view) {
    if (view !== "overview-view") this.overviewPage.hide();
    if (view !== "detail-view") this.detailPage.serial.showFor(null);
    for (const name of VIEWS) $(name).hidden = name !== view;
    for (const link of document.querySelectorAll("#pages a")) {
      if (`${link.dataset.page}-view` === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  showLogin() {
    $("session").hidden = true;
    $("pages").hidden = true;
    this.show("login-view");
    $("login-user").focus();
  }

  /** Say something to screen readers (a polite log: the latest few messages are kept). */
  announce(text) {
    const log = $("announcer");
    const message = document.createElement("p");
    message.textContent = text;
    log.append(message);
    while (log.children.length > 5) log.firstElementChild.remove();
  }

  showError(text) {
    const error = $("error");
    error.textContent = text;
    error.hidden = !text;
  }

  /** Run ``work``; an API error is shown (and null returned) instead of thrown. */
  async attempt(work, announcement) {
    try {
      const result = await work();
      this.showError("");
      if (announcement) this.announce(`${announcement}: requested.`);
      return result ?? true;
    } catch (error) {
      if (error.status === 401) {
        this.logOut();
        this.showError("Your session has ended: log in again.");
        return null;
      }
      this.showError(error.message);
      return null;
    }
  }

  async logIn() {
    const form = new FormData($("login-form"));
    const session = await this.attempt(
      () => login(form.get("user"), form.get("password"), form.get("domain"), form.get("project")),
      null,
    );
    if (!session) return;
    $("login-form").reset();
    this.begin(session);
  }

  logOut() {
    if (this.stream) this.stream.close();
    this.stream = null;
    this.session = null;
    forgetSession();
    this.store.unload();
    this.imagesPage.images.unload();
    this.volumesPage.volumes.unload();
    this.networksPage.unload();
    this.showLogin();
  }

  async switchProject(projectId) {
    const session = await this.attempt(() => rescope(this.session, projectId), null);
    if (!session) return;
    this.announce(`Now working in project ${session.project.name}.`);
    this.begin(session);
  }

  /** Work as ``session``: the socket first, then (once it is subscribed) the listing. */
  begin(session) {
    if (this.stream) this.stream.close();
    this.overviewPage.hide();
    this.session = session;
    this.api = new Api(session);
    this.store.unload();
    this.imagesPage.images.unload();
    this.volumesPage.volumes.unload();
    this.networksPage.unload();
    document.body.classList.toggle("admin", isAdmin(session));
    $("who").textContent = `${session.user.name}`;
    $("session").hidden = false;
    $("pages").hidden = false;
    this.fillProjects();
    const query = { kinds: "instance,image,volume,port,router,security_group" };
    if (isAdmin(session)) query.project = session.project.id;
    this.stream = new EventStream(
      session.token,
      {
        onEvent: (event) => {
          this.store.apply(event);
          this.imagesPage.images.apply(event);
          this.volumesPage.volumes.apply(event);
          this.networksPage.routers.apply(event);
          this.networksPage.groups.apply(event);
          this.overviewPage.projectEvent(event);
          this.detailPage.volumeEvent(event);
          this.detailPage.portEvent(event);
          for (const watch of this.watches) watch(event);
        },
        onSubscribed: () => this.loadIfNeeded(),
        onState: (state) => this.linkState(state),
        onExpired: () => this.store.unload(),
        onTokenInvalid: () => {
          this.logOut();
          this.showError("Your session has ended: log in again.");
        },
      },
      query,
    );
    this.stream.open();
    this.route();
  }

  /** Watch this session's events of ``kind`` from now on (``EventWatch``). */
  watchEvents(kind) {
    return new EventWatch(this.watches, kind);
  }

  linkState(state) {
    const shown = $("link-state");
    shown.dataset.state = state;
    shown.textContent = state;
  }

  async fillProjects() {
    const session = this.session;
    const listed = await this.attempt(() => this.api.projects(), null);
    if (!listed || session !== this.session) return;
    const select = $("project-switch");
    select.replaceChildren(...listed.projects.map((project) => new Option(project.name, project.id)));
    select.value = session.project.id;
    select.disabled = listed.projects.length < 2;
  }

  /** The REST listing, once per session (and after a resume point expired); events wait for it. */
  async loadIfNeeded() {
    if (this.store.loaded || this.loading) return;
    this.loading = true;
    const session = this.session;
    performance.mark("dashboard:subscribed");
    try {
      const servers = await this.attempt(() => this.api.servers(), null);
      performance.mark("dashboard:listed");
      if (servers && session === this.session) this.store.load(servers);
      performance.mark("dashboard:rendered");
    } finally {
      this.loading = false;
    }
  }

  route() {
    if (!this.session) return;
    const match = location.hash.match(/^#\/instances\/([0-9a-f-]+)$/);
    if (match) {
      this.show("detail-view");
      this.detailPage.show(match[1]);
    } else if (location.hash === "#/images") {
      this.show("images-view");
      $("images-title").focus();
      this.imagesPage.show();
    } else if (location.hash === "#/volumes") {
      this.show("volumes-view");
      $("volumes-title").focus();
      this.volumesPage.show();
    } else if (location.hash === "#/network") {
      this.show("network-view");
      $("network-title").focus();
      this.networksPage.show();
    } else if (location.hash === "#/keypairs") {
      this.show("keypairs-view");
      $("keypairs-title").focus();
      this.keypairsPage.show();
    } else if (location.hash === "#/overview") {
      this.show("overview-view");
      $("overview-title").focus();
      this.overviewPage.show();
    } else if (location.hash === "#/identity" && isAdmin(this.session)) {
      this.show("identity-view");
      $("identity-title").focus();
      this.identityPage.show();
    } else {
      this.show("instances-view");
      $("instances-title").focus();
    }
  }
}

new App().start();
