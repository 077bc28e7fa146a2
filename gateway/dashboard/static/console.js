// An instance's interactive serial console (Nova's remote-consoles): the gateway answers a
// websocket URL holding a one-time console token (not the session's), and the socket carries the
// guest's serial port both ways as binary frames. What the guest prints is shown as text (terminal
// control sequences left out); what is typed is sent a line at a time, Enter as a carriage return.

const $ = (id) => document.getElementById(id);
const KEPT_CHARACTERS = 65_536;
// CSI and OSC sequences, and the other escapes: a terminal's, not text
const CONTROL = /\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]|\r(?!\n)/g;

/** What a terminal would show of ``text``, as plain text (escapes and lone carriage returns gone). */
export function plainText(text) {
  return text.replace(CONTROL, "").replace(/\r\n/g, "\n");
}

export class SerialConsole {
  constructor(app) {
    this.app = app;
    this.socket = null;
    this.decoder = null;
    this.instanceId = null;
    $("serial-open").addEventListener("click", () => this.open(this.instanceId));
    $("serial-close").addEventListener("click", () => this.close("Closed."));
    $("serial-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendLine();
    });
  }

  /** The detail page shows another instance (or none): any console open is closed. */
  showFor(instanceId) {
    if (this.instanceId !== instanceId) this.close("");
    this.instanceId = instanceId;
    if (!this.socket) $("serial-output").textContent = "";
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
    $("serial-output").textContent = "";
    this.state("Connecting…", true);
    socket.addEventListener("open", () => {
      this.state("Connected: type a line and press Enter.", true);
      $("serial-input").focus();
    });
    socket.addEventListener("message", (message) => this.show(message.data));
    socket.addEventListener("close", () => {
      if (this.socket === socket) this.close("The console closed.");
    });
  }

  show(data) {
    const text = this.decoder.decode(data, { stream: true });
    const output = $("serial-output");
    output.textContent = (output.textContent + plainText(text)).slice(-KEPT_CHARACTERS);
    output.scrollTop = output.scrollHeight;
  }

  sendLine() {
    const input = $("serial-input");
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(new TextEncoder().encode(`${input.value}\r`));
    input.value = "";
  }

  close(text) {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
    this.state(text, false);
  }
}
