// The identity page, for admins (its link is shown to them only; Keystone refuses the others
// anyway): projects, users and role assignments, listed when the page opens and after each change
// it makes (identity has no events), created and deleted, roles granted and revoked.

const $ = (id) => document.getElementById(id);
const V3 = "/identity/v3";

/** A row: a header cell then data cells, and a last cell with one button (``label``: its name). */
function row(texts, button, label, run) {
  const tr = document.createElement("tr");
  texts.forEach((text, index) => {
    const cell = document.createElement(index === 0 ? "th" : "td");
    if (index === 0) cell.scope = "row";
    cell.textContent = text;
    tr.append(cell);
  });
  const actions = document.createElement("td");
  const action = document.createElement("button");
  action.type = "button";
  action.textContent = button;
  action.setAttribute("aria-label", label);
  action.addEventListener("click", run);
  actions.append(action);
  tr.append(actions);
  return tr;
}

function options(select, items, text) {
  const chosen = select.value;
  select.replaceChildren(...items.map((item) => new Option(text(item), item.id)));
  if (items.some((item) => item.id === chosen)) select.value = chosen;
}

export class IdentityPage {
  constructor(app) {
    this.app = app;
    this.form("project-form", (data) => this.createProject(data));
    this.form("user-form", (data) => this.createUser(data));
    this.form("grant-form", (data) => this.grant(data));
  }

  form(id, submit) {
    $(id).addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await submit(new FormData($(id)))) $(id).reset();
    });
  }

  async show() {
    const api = this.app.api;
    const loaded = await this.app.attempt(
      () =>
        Promise.all([
          api.get(`${V3}/projects`),
          api.get(`${V3}/users`),
          api.get(`${V3}/roles`),
          api.get(`${V3}/role_assignments?include_names=true`),
        ]),
      null,
    );
    if (!loaded) return;
    const [projects, users, roles, assignments] = loaded;
    const byName = (a, b) => a.name.localeCompare(b.name);
    const projectList = [...projects.projects].sort(byName);
    const userList = [...users.users].sort(byName);
    $("project-rows").replaceChildren(
      ...projectList.map((project) =>
        row(
          [project.name, project.description || "", project.enabled ? "yes" : "no"],
          "Delete",
          `Delete project ${project.name}`,
          () => this.remove(`${V3}/projects/${project.id}`, `project ${project.name}`),
        ),
      ),
    );
    $("user-rows").replaceChildren(
      ...userList.map((user) =>
        row(
          [user.name, user.description || "", user.enabled ? "yes" : "no"],
          "Delete",
          `Delete user ${user.name}`,
          () => this.remove(`${V3}/users/${user.id}`, `user ${user.name}`),
        ),
      ),
    );
    const projectAssignments = assignments.role_assignments.filter((item) => item.user && item.scope.project);
    $("assignment-rows").replaceChildren(
      ...projectAssignments.map((item) => {
        const who = item.user.name || item.user.id;
        const where = item.scope.project.name || item.scope.project.id;
        const role = item.role.name || item.role.id;
        const path = `${V3}/projects/${item.scope.project.id}/users/${item.user.id}/roles/${item.role.id}`;
        return row([who, where, role], "Revoke", `Revoke ${role} of ${who} on ${where}`, () =>
          this.remove(path, `role ${role} of ${who} on ${where}`, "Revoke"),
        );
      }),
    );
    options($("grant-user"), userList, (user) => user.name);
    options($("grant-project"), projectList, (project) => project.name);
    options($("grant-role"), [...roles.roles].sort(byName), (role) => role.name);
  }

  async createProject(data) {
    const project = { name: data.get("name"), description: data.get("description") || "" };
    const done = await this.app.attempt(
      () => this.app.api.post(`${V3}/projects`, { project }),
      `Creating project ${project.name}`,
    );
    if (done) await this.show();
    return done;
  }

  async createUser(data) {
    const user = { name: data.get("name"), password: data.get("password") };
    if (data.get("description")) user.description = data.get("description");
    const done = await this.app.attempt(
      () => this.app.api.post(`${V3}/users`, { user }),
      `Creating user ${user.name}`,
    );
    if (done) await this.show();
    return done;
  }

  async grant(data) {
    const path = `${V3}/projects/${data.get("project")}/users/${data.get("user")}/roles/${data.get("role")}`;
    const done = await this.app.attempt(() => this.app.api.put(path), "Granting the role");
    if (done !== null) await this.show();
    return done !== null;
  }

  async remove(path, what, verb = "Delete") {
    if (!confirm(`${verb} ${what}?`)) return;
    const doing = verb === "Delete" ? "Deleting" : "Revoking";
    const done = await this.app.attempt(() => this.app.api.del(path), `${doing} ${what}`);
    if (done !== null) await this.show();
  }
}
