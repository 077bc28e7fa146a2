// An instance's interactive serial console (Nova's remote-consoles): the gateway answers a
// websocket URL holding a one-time console token (not the session's), and the socket carries the
// guest's serial port both ways as binary frames. The guest's output moves a terminal screen
// (terminal.js) drawn into the focusable terminal element; there every key goes to the guest at
// once as a terminal's bytes, and Ctrl+] leaves for the line form below it, which sends a whole
// line (Enter as a carriage return) for whoever prefers it.

import { Screen, keyBytes, pastedBytes } from "./terminal.js";

const $ = (id) => document.getElementById(id);
const KEPT_LINES = 2000;

/** The key that leaves the terminal (as for ``aiostack server console --attach``): Ctrl+]. */
function leaves(event) {
  return event.ctrlKey && !event.altKey && !event.metaKey && (event.key === "]" || event.code === "BracketRight");
}

export class SerialConsole {
  constructor(app) {
    this.app = app;
    this.socket = null;
    this.decoder = null;
    this.instanceId = null;
    this.screen = this.newScreen();
    this.drawing = 0;
    this.encoder = new TextEncoder();
    const terminal = $("serial-output");
    terminal.addEventListener("keydown", (event) => this.key(event));
    terminal.addEventListener("paste", (event) => this.paste(event));
    $("serial-open").addEventListener("click", () => this.open(this.instanceId));
    $("serial-close").addEventListener("click", () => this.close("Closed."));
    $("serial-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendLine();
    });
  }

  newScreen() {
    return new Screen({ kept: KEPT_LINES, reply: (text) => this.send(text) });
  }

  /** The detail page shows another instance (or none): any console open is closed. */
  showFor(instanceId) {
    if (this.instanceId !== instanceId) this.close("");
    this.instanceId = instanceId;
    if (!this.socket) this.clear();
  }

  clear() {
    this.screen = this.newScreen();
    $("serial-output").replaceChildren();
  }

  state(text, open) {
    $("serial-state").textContent = text;
    $("serial-open").hidden = open;
    $("serial-close").hidden = !open;
    $("serial-form").hidden = !open;
  }

  async open(instanceId) {
    const body = { remote_console: { protocol: "serial", type: "serial" } };
    let url;
    try {
      const answer = await this.app.api.post(`/compute/v2.1/servers/${instanceId}/remote-consoles`, body);
      url = answer.remote_console.url;
    } catch (error) {
      if (error.status === 401) return this.app.attempt(() => Promise.reject(error), null);
      this.state(`No serial console: ${error.message}`, false);
      return;
    }
    if (instanceId !== this.instanceId) return;
    const socket = new WebSocket(url, ["binary"]);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.decoder = new TextDecoder();
    this.clear();
    this.state("Connecting…", true);
    socket.addEventListener("open", () => {
      this.state("Connected: keys typed in the terminal go to the guest; Ctrl+] leaves it.", true);
      $("serial-output").focus();
    });
    socket.addEventListener("message", (message) => this.show(message.data));
    socket.addEventListener("close", () => {
      if (this.socket === socket) this.close("The console closed.");
    });
  }

  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  send(text) {
    if (this.connected) this.socket.send(this.encoder.encode(text));
  }

  show(data) {
    this.screen.write(this.decoder.decode(data, { stream: true }));
    if (!this.drawing) this.drawing = requestAnimationFrame(() => this.draw());
  }

  /** The screen into the terminal element: its text, the cursor a span; kept at the bottom if it was. */
  draw() {
    this.drawing = 0;
    const terminal = $("serial-output");
    const atBottom = terminal.scrollTop + terminal.clientHeight >= terminal.scrollHeight - 4;
    const { lines, cursor } = this.screen.view();
    const line = lines[cursor.line].padEnd(cursor.column + 1);
    const before = [...lines.slice(0, cursor.line), line.slice(0, cursor.column)].join("\n");
    const after = [line.slice(cursor.column + 1), ...lines.slice(cursor.line + 1)].join("\n");
    const mark = document.createElement("span");
    mark.className = "cursor";
    mark.textContent = line[cursor.column];
    terminal.replaceChildren(before, mark, after);
    if (atBottom) terminal.scrollTop = terminal.scrollHeight;
  }

  key(event) {
    if (!this.connected) return;
    const terminal = $("serial-output");
    if (leaves(event)) {
      event.preventDefault();
      $("serial-input").focus();
      return;
    }
    if (event.shiftKey && !event.ctrlKey && (event.key === "PageUp" || event.key === "PageDown")) {
      event.preventDefault(); // the scrollback, as terminals do
      const page = terminal.clientHeight * 0.9;
      terminal.scrollBy(0, event.key === "PageUp" ? -page : page);
      return;
    }
    if (event.ctrlKey && event.shiftKey && event.code === "KeyC") {
      event.preventDefault(); // copy the selection (Ctrl+C is the guest's)
      document.execCommand("copy");
      return;
    }
    const bytes = keyBytes(event, this.screen.applicationCursor);
    if (bytes === null) return;
    event.preventDefault();
    this.send(bytes);
  }

  paste(event) {
    if (!this.connected) return;
    event.preventDefault();
    this.send(pastedBytes(event.clipboardData.getData("text/plain")));
  }

  sendLine() {
    const input = $("serial-input");
    if (!this.connected) return;
    this.send(`${input.value}\r`);
    input.value = "";
  }

  close(text) {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
    this.state(text, false);
  }
}
