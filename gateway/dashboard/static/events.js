// The gateway's event socket (/ws, docs/EVENTS.md): the token goes in the handshake's
// subprotocols, never in the URL; after a disconnect the socket comes back with
// ?since=<the last sequence seen>, so no event is missed in between.

const CLOSE_TOKEN_INVALID = 4001;
const CLOSE_RESUME_EXPIRED = 4010;
const RETRY_FIRST_MS = 250;
const RETRY_MOST_MS = 5000;

export class EventStream {
  /**
   * @param {string} token the session's token
   * @param {object} handlers onEvent(event, seq), onSubscribed(), onState(state),
   *   onExpired() (the resume point is gone: reload), onTokenInvalid()
   * @param {object} query kinds and (admins) project of the events wanted
   */
  constructor(token, handlers, query) {
    this.token = token;
    this.handlers = handlers;
    this.query = query;
    this.lastSeq = null;
    this.retryMs = RETRY_FIRST_MS;
    this.closed = false;
    this.socket = null;
    this.timer = null;
  }

  url() {
    const params = new URLSearchParams(this.query);
    params.set("since", this.lastSeq === null ? "now" : String(this.lastSeq));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws?${params}`;
  }

  open() {
    this.handlers.onState("connecting");
    const socket = new WebSocket(this.url(), ["aiostack.events", `aiostack.token.${this.token}`]);
    this.socket = socket;
    socket.addEventListener("message", (message) => this.receive(JSON.parse(message.data)));
    socket.addEventListener("close", (closing) => this.closedWith(socket, closing.code));
  }

  receive(frame) {
    if (frame.type === "subscribed") {
      if (this.lastSeq === null) this.lastSeq = frame.since;
      this.retryMs = RETRY_FIRST_MS;
      this.handlers.onSubscribed();
    } else if (frame.type === "event") {
      this.lastSeq = frame.seq;
      this.handlers.onEvent(frame.event, frame.seq);
    } else if (frame.type === "caught_up") {
      this.handlers.onState("live");
    } else if (frame.type === "slow_consumer") {
      this.lastSeq = frame.resume_seq;
    }
  }

  closedWith(socket, code) {
    if (socket !== this.socket || this.closed) return;
    if (code === CLOSE_TOKEN_INVALID) {
      this.handlers.onTokenInvalid();
      return;
    }
    if (code === CLOSE_RESUME_EXPIRED) {
      this.lastSeq = null;
      this.handlers.onExpired();
    }
    this.handlers.onState("reconnecting");
    this.timer = setTimeout(() => this.open(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MOST_MS);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }
}

/**
 * The stream's events of one kind from now on, kept until ``stop``: ``until(test)`` is the first
 * that passes ``test``, whether it came already or is still to come (a resource made by a request
 * may send its events before the request's answer is read).
 */
export class EventWatch {
  constructor(watches, kind) {
    this.watches = watches;
    this.kind = kind;
    this.seen = [];
    this.waiting = [];
    this.watch = (event) => this.take(event);
    watches.add(this.watch);
  }

  take(event) {
    if (event.kind !== this.kind) return;
    this.seen.push(event);
    for (const waiting of [...this.waiting]) {
      if (!waiting.test(event)) continue;
      this.waiting.splice(this.waiting.indexOf(waiting), 1);
      waiting.resolve(event);
    }
  }

  until(test) {
    const found = this.seen.find(test);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.waiting.push({ test, resolve }));
  }

  stop() {
    this.watches.delete(this.watch);
  }
}
