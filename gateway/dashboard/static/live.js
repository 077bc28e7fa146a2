// A collection of one kind of resource kept up to date by the event stream (each event carries the
// resource's whole new state), and a table that shows one and changes its rows in place.

export class LiveCollection {
  /**
   * ``kind``: the events' kind (instance, image, volume); ``fromEvent``: an event's state as an item;
   * ``fromListed``: an item of the REST listing as one.
   */
  constructor(kind, fromEvent = (state) => state, fromListed = (listed) => listed) {
    this.kind = kind;
    this.fromEvent = fromEvent;
    this.fromListed = fromListed;
    this.items = new Map();
    this.loaded = false;
    this.pending = [];
    this.listeners = new Set();
  }

  /**
   * Tell ``listener(change)`` of every change: {kind: "reset"} or {kind: "put"|"gone", item, before,
   * event} (``event``: the stream's event that made it; none for the page's own ``expect``).
   */
  subscribe(listener) {
    this.listeners.add(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  /** Forget everything (another session); events are kept until the next ``load``. */
  unload() {
    this.items = new Map();
    this.loaded = false;
    this.pending = [];
    this.emit({ kind: "reset" });
  }

  /** The REST listing, then the events that came while it was read, in order. */
  load(items) {
    this.items = new Map(items.map((listed) => this.fromListed(listed)).map((item) => [item.id, item]));
    this.loaded = true;
    this.emit({ kind: "reset" });
    const pending = this.pending;
    this.pending = [];
    for (const event of pending) this.apply(event);
  }

  apply(event) {
    if (event.kind !== this.kind) return;
    if (!this.loaded) {
      this.pending.push(event);
      return;
    }
    const before = this.items.get(event.id);
    if (event.type === `${this.kind}.deleted`) {
      this.items.delete(event.id);
      if (before) this.emit({ kind: "gone", item: before, before, event });
      return;
    }
    const item = this.fromEvent(event.state);
    this.items.set(item.id, item);
    this.emit({ kind: "put", item, before, event });
  }

  /** An item the page itself just made (its create answered): shown until its events come. */
  expect(item) {
    if (!this.loaded || this.items.has(item.id)) return;
    this.items.set(item.id, item);
    this.emit({ kind: "put", item, before: undefined });
  }
}

/**
 * The rows of ``tbody`` for a LiveCollection: ``columns`` [{field, text(item)}] (a ``status``
 * field is marked for styles and announced when it changes), ``actions(item)``
 * [{name, label, run(), enabled}], ``noun`` ("Image") for what is announced.
 */
export class LiveTable {
  constructor(app, collection, tbody, { columns, actions, noun }) {
    this.app = app;
    this.collection = collection;
    this.tbody = tbody;
    this.columns = columns;
    this.actions = actions;
    this.noun = noun;
    this.rows = new Map();
    collection.subscribe((change) => this.changed(change));
  }

  name(item) {
    return item.name || item.id;
  }

  render() {
    this.rows.clear();
    const sorted = [...this.collection.items.values()].sort((a, b) => this.name(a).localeCompare(this.name(b)));
    this.tbody.replaceChildren(...sorted.map((item) => this.row(item)));
  }

  row(item) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    const cells = {};
    for (const { field } of this.columns) {
      const cell = document.createElement(field === "name" ? "th" : "td");
      if (field === "name") cell.scope = "row";
      cell.dataset.field = field;
      cells[field] = cell;
      tr.append(cell);
    }
    const actions = document.createElement("td");
    actions.className = "buttons";
    tr.append(actions);
    const row = { tr, cells, actions, buttons: new Map() };
    this.rows.set(item.id, row);
    this.fill(row, item);
    return tr;
  }

  fill(row, item) {
    for (const { field, text } of this.columns) {
      row.cells[field].textContent = text(item);
      if (field === "status") row.cells.status.dataset.status = String(item.status).toUpperCase();
    }
    for (const { name, label, run, enabled } of this.actions(item)) {
      let button = row.buttons.get(name);
      if (!button) {
        button = document.createElement("button");
        button.type = "button";
        button.textContent = name;
        row.buttons.set(name, button);
        row.actions.append(button);
      }
      button.setAttribute("aria-label", label);
      button.disabled = !enabled;
      button.onclick = run; // the item's latest state: a button outlives its row's changes
    }
  }

  changed(change) {
    if (change.kind === "reset") {
      this.render();
      return;
    }
    const row = this.rows.get(change.item.id);
    if (change.kind === "gone") {
      if (row) row.tr.remove();
      this.rows.delete(change.item.id);
      this.app.announce(`${this.noun} ${this.name(change.item)} was deleted.`);
      return;
    }
    if (row) this.fill(row, change.item);
    else this.tbody.append(this.row(change.item));
    if (change.before && change.before.status !== change.item.status) {
      this.app.announce(`${this.noun} ${this.name(change.item)} is now ${change.item.status}.`);
    }
  }
}
