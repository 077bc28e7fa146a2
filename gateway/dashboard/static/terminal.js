// A minimal terminal for the serial console, no library: ``Screen`` is what a VT100-like terminal
// shows (a screen of lines with a cursor over a bounded scrollback) as the guest's output moves
// it, and ``keyBytes`` is what such a terminal sends for a key. Only what a shell's line editing
// and the usual programs use is kept: the C0 controls, CSI cursor movement, erase, insert and
// delete; colours and other attributes (SGR), titles (OSC), modes and character sets are read
// and ignored, so their text never shows.

const CAN = "\x18";
const SUB = "\x1a";
const ESC = "\x1b";
const MAX_PARAMETERS = 32;

/** A screen of ``rows`` x ``columns`` characters over at most ``kept`` lines of scrollback. */
export class Screen {
  /**
   * @param {{rows?: number, columns?: number, kept?: number, reply?: (text: string) => void}} options
   * ``reply`` gets what the terminal answers the guest (its cursor position when asked).
   */
  constructor({ rows = 24, columns = 80, kept = 2000, reply = () => {} } = {}) {
    this.rows = rows;
    this.columns = columns;
    this.kept = kept;
    this.reply = reply;
    this.reset();
  }

  reset() {
    /** @type {string[][]} every line, one character a cell; the screen is the last ``rows`` */
    this.lines = Array.from({ length: this.rows }, () => []);
    this.row = 0;
    this.column = 0;
    this.wrapPending = false; // a character went to the last column: the next one starts a line
    this.saved = { row: 0, column: 0 };
    this.applicationCursor = false; // DECCKM: arrows are sent as ESC O A rather than ESC [ A
    this.state = "text";
    this.sequence = "";
  }

  /** Where the screen starts in ``lines``. */
  get top() {
    return this.lines.length - this.rows;
  }

  /** The line under the cursor. */
  get line() {
    return this.lines[this.top + this.row];
  }

  /** Moves the screen by ``text``, the guest's output (decoded already). */
  write(text) {
    for (const character of text) this.feed(character);
  }

  feed(character) {
    switch (this.state) {
      case "text":
        if (character === ESC) this.state = "escape";
        else if (character < " " || character === "\x7f") this.control(character);
        else this.print(character);
        return;
      case "escape":
        this.escape(character);
        return;
      case "csi":
        if (character === ESC) this.state = "escape";
        else if (character === CAN || character === SUB) this.state = "text";
        else if (character < " ") this.control(character); // a terminal obeys C0 inside CSI too
        else if (character >= "@" && character <= "~") {
          this.state = "text";
          this.csi(this.sequence, character);
        } else if (this.sequence.length < MAX_PARAMETERS) this.sequence += character;
        return;
      case "string": // OSC, DCS, PM, APC: up to BEL (OSC) or ST (ESC \)
        if (character === "\x07" || character === CAN || character === SUB) this.state = "text";
        else if (character === ESC) this.state = "string-escape";
        return;
      case "string-escape":
        this.state = character === "\\" ? "text" : "string";
        return;
      case "skip-one": // the character set named after ESC ( and its kind
        this.state = "text";
        return;
    }
  }

  control(character) {
    switch (character) {
      case "\r":
        this.column = 0;
        this.wrapPending = false;
        return;
      case "\n":
      case "\v":
      case "\f":
        this.lineFeed();
        return;
      case "\b":
        this.wrapPending = false;
        this.column = Math.max(0, this.column - 1);
        return;
      case "\t":
        this.wrapPending = false;
        this.column = Math.min(this.columns - 1, (Math.floor(this.column / 8) + 1) * 8);
        return;
      default: // BEL, DEL and the others show nothing
        return;
    }
  }

  print(character) {
    if (this.wrapPending) {
      this.column = 0;
      this.lineFeed();
    }
    const line = this.line;
    while (line.length < this.column) line.push(" ");
    line[this.column] = character;
    if (this.column === this.columns - 1) this.wrapPending = true;
    else this.column += 1;
  }

  lineFeed() {
    this.wrapPending = false;
    if (this.row < this.rows - 1) {
      this.row += 1;
      return;
    }
    this.lines.push([]);
    const over = this.lines.length - this.rows - this.kept;
    if (over > 0) this.lines.splice(0, over);
  }

  escape(character) {
    this.state = "text";
    switch (character) {
      case "[":
        this.state = "csi";
        this.sequence = "";
        return;
      case "]":
      case "P":
      case "X":
      case "^":
      case "_":
        this.state = "string";
        return;
      case "(":
      case ")":
      case "*":
      case "+":
      case "-":
      case ".":
      case "/":
      case "#":
      case "%":
      case " ":
        this.state = "skip-one";
        return;
      case "7":
        this.saved = { row: this.row, column: this.column };
        return;
      case "8":
        this.moveTo(this.saved.row, this.saved.column);
        return;
      case "D":
        this.lineFeed();
        return;
      case "E":
        this.column = 0;
        this.lineFeed();
        return;
      case "M":
        this.reverseIndex();
        return;
      case "c":
        this.reset();
        return;
      default: // keypad modes (= >) and the rest: nothing to show
        return;
    }
  }

  reverseIndex() {
    this.wrapPending = false;
    if (this.row > 0) this.row -= 1;
    else this.insertLines(1);
  }

  moveTo(row, column) {
    this.wrapPending = false;
    this.row = Math.min(this.rows - 1, Math.max(0, row));
    this.column = Math.min(this.columns - 1, Math.max(0, column));
  }

  /** A CSI sequence: ``sequence`` its parameters (and private marker), ``final`` its last character. */
  csi(sequence, final) {
    if (/^[<=>?]/.test(sequence)) {
      if (sequence === "?1" && (final === "h" || final === "l")) this.applicationCursor = final === "h";
      return; // other private modes (cursor shown, alternate screen...) change no text
    }
    if (/[ -/]/.test(sequence)) return; // intermediate characters: cursor style and the like
    const parameters = sequence.split(";").map((part) => Number.parseInt(part, 10) || 0);
    const first = parameters[0] ?? 0;
    const count = Math.max(1, first);
    switch (final) {
      case "A":
        return this.moveTo(this.row - count, this.column);
      case "B":
      case "e":
        return this.moveTo(this.row + count, this.column);
      case "C":
      case "a":
        return this.moveTo(this.row, this.column + count);
      case "D":
        return this.moveTo(this.row, this.column - count);
      case "E":
        return this.moveTo(this.row + count, 0);
      case "F":
        return this.moveTo(this.row - count, 0);
      case "G":
      case "`":
        return this.moveTo(this.row, count - 1);
      case "d":
        return this.moveTo(count - 1, this.column);
      case "H":
      case "f":
        return this.moveTo(count - 1, Math.max(1, parameters[1] ?? 0) - 1);
      case "K":
        return this.eraseInLine(first);
      case "J":
        return this.eraseInDisplay(first);
      case "P":
        this.line.splice(this.column, count);
        return;
      case "@":
        return this.insertBlanks(count);
      case "X":
        return this.eraseCells(this.line, this.column, this.column + count);
      case "L":
        return this.insertLines(count);
      case "M":
        return this.deleteLines(count);
      case "s":
        this.saved = { row: this.row, column: this.column };
        return;
      case "u":
        return this.moveTo(this.saved.row, this.saved.column);
      case "n":
        if (first === 6) this.reply(`${ESC}[${this.row + 1};${this.column + 1}R`);
        else if (first === 5) this.reply(`${ESC}[0n`);
        return;
      default: // SGR (m), scrolling regions (r), tab stops...: no text of theirs to show
        return;
    }
  }

  eraseCells(line, from, to) {
    for (let column = from; column < Math.min(to, line.length); column += 1) line[column] = " ";
    while (line.length && line[line.length - 1] === " ") line.pop();
  }

  eraseInLine(mode) {
    const line = this.line;
    if (mode === 0) line.length = Math.min(line.length, this.column);
    else if (mode === 1) this.eraseCells(line, 0, this.column + 1);
    else line.length = 0;
  }

  eraseInDisplay(mode) {
    const top = this.top;
    if (mode === 0) {
      this.eraseInLine(0);
      for (let row = this.row + 1; row < this.rows; row += 1) this.lines[top + row] = [];
    } else if (mode === 1) {
      this.eraseInLine(1);
      for (let row = 0; row < this.row; row += 1) this.lines[top + row] = [];
    } else if (mode === 2) {
      for (let row = 0; row < this.rows; row += 1) this.lines[top + row] = [];
    } else if (mode === 3) {
      this.lines.splice(0, top);
    }
  }

  insertBlanks(count) {
    const line = this.line;
    if (line.length <= this.column) return;
    line.splice(this.column, 0, ...Array(count).fill(" "));
    line.length = Math.min(line.length, this.columns);
  }

  /** Blank lines at the cursor's, those below pushed down and off the screen. */
  insertLines(count) {
    const top = this.top;
    const added = Math.min(count, this.rows - this.row);
    this.lines.splice(top + this.row, 0, ...Array.from({ length: added }, () => []));
    this.lines.splice(top + this.rows, added);
  }

  /** The cursor's line and those after it gone, those below pulled up, blank lines at the bottom. */
  deleteLines(count) {
    const removed = Math.min(count, this.rows - this.row);
    this.lines.splice(this.top + this.row, removed);
    this.lines.push(...Array.from({ length: removed }, () => []));
  }

  /**
   * What to show: the lines as text (scrollback first; blank lines below the cursor left out) and
   * the cursor's place among them.
   */
  view() {
    const cursorLine = this.top + this.row;
    let end = this.lines.length;
    while (end > cursorLine + 1 && this.lines[end - 1].length === 0) end -= 1;
    const lines = this.lines.slice(0, end).map((line) => line.join(""));
    return { lines, cursor: { line: cursorLine, column: this.column } };
  }
}

const NAMED_KEYS = {
  Enter: "\r",
  Backspace: "\x7f",
  Tab: "\t",
  Escape: ESC,
  Insert: `${ESC}[2~`,
  Delete: `${ESC}[3~`,
  PageUp: `${ESC}[5~`,
  PageDown: `${ESC}[6~`,
};
const CURSOR_KEYS = { ArrowUp: "A", ArrowDown: "B", ArrowRight: "C", ArrowLeft: "D", Home: "H", End: "F" };
const CONTROL_PUNCTUATION = { "[": ESC, "\\": "\x1c", "^": "\x1e", 6: "\x1e", _: "\x1f", "-": "\x1f", " ": "\0", "@": "\0", 2: "\0" };

/**
 * What a terminal sends the guest for a key (``event`` a KeyboardEvent's ``key``, ``code`` and
 * modifiers), or null for a key the browser keeps: function keys, Alt and Meta (Cmd) shortcuts,
 * and Ctrl+Shift ones (copy and paste among them).
 */
export function keyBytes(event, applicationCursor = false) {
  const { key, code, ctrlKey, shiftKey, altKey, metaKey } = event;
  if (metaKey || event.isComposing) return null;
  const single = [...key].length === 1;
  if (single && ctrlKey && altKey) return key; // AltGr on Windows: a character of the layout
  if (altKey) return null;
  const letter = /^Key[A-Z]$/.test(code) ? code.slice(3) : /^[a-zA-Z]$/.test(key) ? key.toUpperCase() : null;
  const modifier = 1 + (shiftKey ? 1 : 0) + (ctrlKey ? 4 : 0);
  if (key in CURSOR_KEYS) {
    const final = CURSOR_KEYS[key];
    if (modifier > 1) return `${ESC}[1;${modifier}${final}`;
    return applicationCursor ? `${ESC}O${final}` : `${ESC}[${final}`;
  }
  if (ctrlKey && shiftKey) return null;
  if (key === "Tab" && shiftKey) return `${ESC}[Z`;
  if (key in NAMED_KEYS) {
    if (!ctrlKey) return NAMED_KEYS[key];
    return key === "Backspace" ? "\b" : null;
  }
  if (ctrlKey) {
    if (letter) return String.fromCharCode(letter.charCodeAt(0) - 64);
    return CONTROL_PUNCTUATION[key] ?? null;
  }
  return single ? key : null;
}

/** Pasted text as a terminal sends it: its line ends as carriage returns (what Enter sends). */
export function pastedBytes(text) {
  return text.replace(/\r?\n/g, "\r");
}
