// The REST API as the dashboard uses it: the session (token in sessionStorage, never in a URL),
// Keystone login and re-scoping, and JSON requests that carry X-Auth-Token.

const SESSION_KEY = "aiostack.session";
const COMPUTE_VERSION = "compute 2.25";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The session kept for this tab: {token, user, project, domain, roles}; null when logged out. */
export function loadSession() {
  const saved = sessionStorage.getItem(SESSION_KEY);
  return saved ? JSON.parse(saved) : null;
}

function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

export function forgetSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

export function isAdmin(session) {
  return session.roles.includes("admin");
}

/** The message of an OpenStack error body, whichever service's format it is in. */
function errorMessage(body, status) {
  if (body && typeof body === "object") {
    for (const value of Object.values(body)) {
      if (value && typeof value === "object" && value.message) return value.message;
    }
    if (body.message) return body.message;
  }
  return `The request failed (${status}).`;
}

async function send(method, path, { token, body, headers = {} } = {}) {
  const sent = { ...headers, Accept: "application/json" };
  if (token) sent["X-Auth-Token"] = token;
  if (path.startsWith("/compute/")) sent["OpenStack-API-Version"] = COMPUTE_VERSION;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await response.text();
  const data = text && (response.headers.get("Content-Type") || "").includes("json") ? JSON.parse(text) : text;
  if (!response.ok) throw new ApiError(response.status, errorMessage(data, response.status));
  return { data, headers: response.headers };
}

async function issueToken(auth, domain) {
  const { data, headers } = await send("POST", "/identity/v3/auth/tokens", { body: { auth } });
  const token = data.token;
  return saveSession({
    token: headers.get("X-Subject-Token"),
    user: { id: token.user.id, name: token.user.name },
    project: { id: token.project.id, name: token.project.name },
    domain,
    roles: token.roles.map((role) => role.name),
  });
}

/** Keystone password login scoped to a project of a domain (both by name). */
export function login(user, password, domain, project) {
  return issueToken(
    {
      identity: { methods: ["password"], password: { user: { name: user, domain: { name: domain }, password } } },
      scope: { project: { name: project, domain: { name: domain } } },
    },
    domain,
  );
}

/** A token for another of the user's projects, from the current token (Keystone's token method). */
export function rescope(session, projectId) {
  return issueToken(
    { identity: { methods: ["token"], token: { id: session.token } }, scope: { project: { id: projectId } } },
    session.domain,
  );
}

/** A client bound to a session: get/post/del of JSON paths. */
export class Api {
  constructor(session) {
    this.session = session;
  }

  async get(path) {
    return (await send("GET", path, { token: this.session.token })).data;
  }

  async post(path, body) {
    return (await send("POST", path, { token: this.session.token, body })).data;
  }

  async put(path, body) {
    return (await send("PUT", path, { token: this.session.token, body })).data;
  }

  async del(path) {
    return (await send("DELETE", path, { token: this.session.token })).data;
  }

  projects() {
    return this.get("/identity/v3/auth/projects");
  }

  /** Every server of the project (each page of the listing, following its next links). */
  async servers() {
    const servers = [];
    let path = "/compute/v2.1/servers/detail?limit=1000";
    while (path) {
      const page = await this.get(path);
      servers.push(...page.servers);
      const next = (page.servers_links || []).find((link) => link.rel === "next");
      const nextUrl = next ? new URL(next.href, location.href) : null;
      path = nextUrl ? nextUrl.pathname + nextUrl.search : null;
    }
    return servers;
  }

  serverAction(id, action) {
    return this.post(`/compute/v2.1/servers/${id}/action`, action);
  }

  deleteServer(id) {
    return this.del(`/compute/v2.1/servers/${id}`);
  }
}
