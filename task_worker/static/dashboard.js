// TaskDashboard front end (anywidget ES module).
//
// The kernel sends "patch" messages (upserts, progress-only changes, removals,
// header) and "snapshot" messages (all rows); this view keeps its own copy of
// the rows and touches only the DOM nodes that changed. Elapsed times tick
// here, from the kernel's epoch timestamps, without any kernel message.
//
// Every piece of user text goes through textContent or setAttribute: nothing
// from the kernel is ever parsed as HTML.
//
// Stable hooks for browser tests (see task_worker/_dashboard.py): .tw-dashboard
// (+ .tw-single), .tw-row[data-task-id][data-status], button.tw-cancel "Cancel",
// [role=progressbar][aria-valuenow], [data-count-<status>].

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
const ACTIVE = new Set(["pending", "running"]);
const COLUMNS = ["Task", "Priority", "Status", "Progress", "Elapsed", ""];
// Content widths (px) below which the header goes compact (.tw-narrow: counts without their
// labels) and may wrap (.tw-tiny). The full header needs about 985 px.
const NARROW_PX = 1000;
const TINY_PX = 560;

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function fmtElapsed(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  const s = Math.max(0, ms / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const total = Math.floor(s);
  const sec = total % 60;
  const min = Math.floor(total / 60) % 60;
  const hours = Math.floor(total / 3600);
  const pad = (n) => String(n).padStart(2, "0");
  return hours ? `${hours}:${pad(min)}:${pad(sec)}` : `${min}:${pad(sec)}`;
}

// Same order as the kernel's _row_order: running (by start), pending (by
// priority then submission), finished (most recent first).
function compareRows(a, b) {
  const group = (r) => (r.status === "running" ? 0 : r.status === "pending" ? 1 : 2);
  const ga = group(a);
  const gb = group(b);
  if (ga !== gb) return ga - gb;
  if (ga === 0) return (a.started || 0) - (b.started || 0) || a.seq - b.seq;
  if (ga === 1) return a.priority - b.priority || a.seq - b.seq;
  return (b.completed || 0) - (a.completed || 0) || b.seq - a.seq;
}

class RowView {
  constructor(view, row) {
    this.view = view;
    this.el = h("div", "tw-row tw-grid");
    this.el.setAttribute("role", "row");
    const cell = (cls) => {
      const c = h("div", `tw-cell ${cls}`);
      c.setAttribute("role", "cell");
      this.el.appendChild(c);
      return c;
    };
    const nameCell = cell("tw-col-name");
    this.name = nameCell.appendChild(h("span", "tw-task-name"));
    this.id = nameCell.appendChild(h("span", "tw-task-id"));
    this.meta = nameCell.appendChild(h("div", "tw-meta"));
    this.priority = cell("tw-col-priority");
    this.badge = cell("tw-col-status").appendChild(h("span", "tw-badge"));
    const progressCell = cell("tw-col-progress");
    this.bar = progressCell.appendChild(h("div", "tw-bar"));
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.fill = this.bar.appendChild(h("div", "tw-bar-fill"));
    this.pct = progressCell.appendChild(h("span", "tw-pct"));
    this.progressCell = progressCell;
    this.eta = null; // made when the task first has an ETA (eta.js)
    this.elapsed = cell("tw-col-elapsed");
    this.button = cell("tw-col-actions").appendChild(h("button", "tw-cancel", "Cancel"));
    this.button.type = "button";
    this.button.addEventListener("click", () => this.cancel());
    this.detail = null;
    this.pane = null;
    this.row = null;
    this.update(row);
  }

  cancel() {
    if (!this.row || !ACTIVE.has(this.row.status)) return;
    this.button.disabled = true;
    this.el.classList.add("tw-cancelling");
    this.view.model.send({ type: "cancel", id: this.row.id });
  }

  update(row) {
    const old = this.row;
    this.row = row;
    if (!old || old.id !== row.id || old.name !== row.name) {
      // The id only where it adds something: not when it is the name, and not in a
      // task's own view (its name is enough there; the id stays in the tooltip).
      this.el.dataset.taskId = row.id;
      this.id.textContent = row.id;
      this.id.title = row.id;
      this.id.hidden = this.view.single || row.id === row.name;
      this.name.textContent = row.name;
      this.name.title = row.id === row.name ? row.name : `${row.name} (id ${row.id})`;
      this.bar.setAttribute("aria-label", `progress of ${row.name}`);
      this.button.setAttribute("aria-label", `Cancel ${row.name}`);
    }
    if (!old || old.meta !== row.meta) {
      this.meta.textContent = row.meta || "";
      // A task's own view leaves metadata to its details pane.
      this.meta.hidden = !row.meta || this.view.single;
    }
    if (!old || old.priority !== row.priority) {
      // The table has a "Priority" column header; a task's own view has no header.
      this.priority.textContent = this.view.single ? `priority ${row.priority}` : String(row.priority);
    }
    if (!old || old.status !== row.status) {
      if (old) this.el.classList.remove(`tw-status-${old.status}`);
      this.el.classList.add(`tw-status-${row.status}`);
      this.el.dataset.status = row.status;
      this.badge.textContent = row.status;
      const active = ACTIVE.has(row.status);
      this.button.disabled = !active;
      if (!active) this.el.classList.remove("tw-cancelling");
    }
    this.setProgress(row.progress);
    if (!old || old.error !== row.error || old.traceback !== row.traceback || old.note !== row.note) {
      this.updateDetail(row);
    }
    rowUpdated(this, old); // details.js
    this.tick();
  }

  setProgress(pct) {
    this.row.progress = pct;
    const value = Math.min(100, Math.max(0, Number(pct) || 0));
    this.fill.style.width = `${value}%`;
    this.bar.setAttribute("aria-valuenow", String(value));
    this.pct.textContent = `${value.toFixed(1)}%`;
  }

  updateDetail(row) {
    if (this.detail) {
      this.detail.remove();
      this.detail = null;
    }
    // A task's own view shows its error in its output area already, and in its details pane;
    // both views show a chain's note ("waiting for load", "attempt 2/4, retrying in 3 s").
    const error = this.view.single ? null : row.error;
    const traceback = this.view.single ? null : row.traceback;
    if (!row.note && !error && !traceback) return;
    const detail = h("div", "tw-detail");
    detail.setAttribute("role", "note");
    if (row.note) detail.appendChild(h("div", "tw-error tw-note", row.note));
    if (error) detail.appendChild(h("div", "tw-error", error));
    if (traceback) {
      const details = detail.appendChild(h("details", "tw-traceback"));
      details.appendChild(h("summary", null, "Traceback"));
      details.appendChild(h("pre", "tw-traceback-text", traceback));
    }
    this.detail = this.el.appendChild(detail);
  }

  tick() {
    const r = this.row;
    let ms = null;
    if (r.started) {
      const end = r.completed || (r.status === "running" ? this.view.kernelNow() : null);
      ms = end === null ? null : end - r.started;
    }
    const text = fmtElapsed(ms);
    if (this.elapsed.textContent !== text) this.elapsed.textContent = text;
    const eta = etaText(r, this.view.kernelNow());
    if (eta && !this.eta) this.eta = this.progressCell.appendChild(h("span", "tw-eta"));
    if (this.eta && this.eta.textContent !== eta) this.eta.textContent = eta;
  }
}

class DashboardView {
  constructor(model, el) {
    this.model = model;
    this.single = Boolean(model.get("task_id"));
    this.offset = 0; // kernel clock minus browser clock, in ms
    this.seq = 0;
    this.rows = new Map(); // id -> RowView
    this.openPanes = new Map(); // id -> RowView with its details pane open (details.js)
    this.sort = null; // {key, dir} of a sorted column (details.js), null: the kernel's order
    this.header = {};
    this.root = h("div", this.single ? "tw-dashboard tw-single" : "tw-dashboard");
    el.appendChild(this.root);
    if (!this.single) this.buildHeader();
    this.scroll = this.root.appendChild(h("div", "tw-scroll"));
    const table = this.scroll.appendChild(h("div", "tw-table"));
    table.setAttribute("role", "table");
    if (!this.single) {
      const head = table.appendChild(h("div", "tw-headrow tw-grid"));
      head.setAttribute("role", "row");
      COLUMNS.forEach((title, i) => {
        const cell = head.appendChild(h("div", "tw-cell", title));
        cell.setAttribute("role", "columnheader");
        makeSortable(this, cell, i); // details.js (and the filter box in the Task column's header)
      });
    }
    this.body = table.appendChild(h("div", "tw-body"));
    this.body.setAttribute("role", "rowgroup");
    this.body.addEventListener("click", (event) => bodyClicked(this, event)); // details.js
    // Local wall-clock times on hover of an elapsed time (eta.js), computed only then.
    this.body.addEventListener("mouseover", (event) => {
      const cell = event.target.closest && event.target.closest(".tw-col-elapsed");
      const rowEl = cell && cell.closest(".tw-row");
      const view = rowEl && this.rows.get(rowEl.dataset.taskId);
      if (view) cell.title = timesTitle(view.row);
    });
    this.empty = this.root.appendChild(h("div", "tw-empty", "No tasks"));
    this.more = this.root.appendChild(h("div", "tw-more"));
    this.more.hidden = true;
    this.note = this.root.appendChild(h("div", "tw-note"));

    this.onMsg = (msg, buffers) => this.handleMessage(msg, buffers);
    this.onNote = () => this.renderNote();
    this.onFilter = () => {
      if (this.filter) this.filter.value = this.model.get("status_filter") || "";
    };
    this.onState = () => this.reset(this.model.get("_rows") || {}, this.model.get("_header") || {});
    model.on("msg:custom", this.onMsg);
    model.on("change:note", this.onNote);
    model.on("change:status_filter", this.onFilter);
    model.on("change:_rows", this.onState);

    this.reset(model.get("_rows") || {}, model.get("_header") || {});
    this.renderNote();
    this.onFilter();
    this.timer = setInterval(() => this.tick(), 1000);
    // The header fits the width the view gets (a class, not a container query: no size
    // containment, so hosts that size outputs to their content still work).
    this.resizer = null;
    if (!this.single && typeof ResizeObserver !== "undefined") {
      this.resizer = new ResizeObserver((entries) => {
        const width = entries[entries.length - 1].contentRect.width;
        const narrow = width < NARROW_PX;
        const tiny = width < TINY_PX;
        if (narrow === this.root.classList.contains("tw-narrow") && tiny === this.root.classList.contains("tw-tiny")) return;
        // Next frame: changing the height of what is observed while it is being reported
        // would be a "ResizeObserver loop" error.
        requestAnimationFrame(() => {
          this.root.classList.toggle("tw-narrow", narrow);
          this.root.classList.toggle("tw-tiny", tiny);
        });
      });
      this.resizer.observe(this.root);
    }
    // Timeline / Table tabs, queue ETA and the Notify toggle (timeline.js, notify.js).
    this.insight = this.single ? null : insightInit(this);
    if (this.insight) this.insight.renderHeader(this.header);
    // The model's state may predate this view: ask the kernel for the current one.
    model.send({ type: "sync" });
  }

  buildHeader() {
    const header = this.root.appendChild(h("div", "tw-header"));
    this.stateEl = header.appendChild(h("span", "tw-worker-state"));
    this.busyEl = header.appendChild(h("span", "tw-busy"));
    const counts = header.appendChild(h("span", "tw-counts"));
    this.countEls = {};
    for (const status of STATUSES) {
      const c = counts.appendChild(h("button", `tw-count tw-status-${status}`));
      c.type = "button";
      c.title = `Show only ${status} tasks`;
      c.setAttribute(`data-count-${status}`, "0");
      c.appendChild(h("span", "tw-dot"));
      c.appendChild(h("span", "tw-count-label", status));
      c.appendChild(h("span", "tw-count-value", "0"));
      c.addEventListener("click", () => this.setFilter(this.model.get("status_filter") === status ? "" : status));
      this.countEls[status] = c;
    }
    header.appendChild(h("span", "tw-spacer"));
    this.filter = header.appendChild(h("select", "tw-filter"));
    this.filter.setAttribute("aria-label", "Filter by status");
    for (const value of ["", ...STATUSES]) {
      const opt = this.filter.appendChild(h("option", null, value || "all"));
      opt.value = value;
    }
    this.filter.addEventListener("change", () => this.setFilter(this.filter.value));
    const cancelAll = header.appendChild(h("button", "tw-cancel-all", "Cancel all"));
    cancelAll.type = "button";
    cancelAll.addEventListener("click", () => this.model.send({ type: "cancel_all" }));
    const clear = header.appendChild(h("button", "tw-clear-finished", "Clear finished"));
    clear.type = "button";
    clear.addEventListener("click", () => this.model.send({ type: "clear_finished" }));
  }

  setFilter(value) {
    this.model.set("status_filter", value);
    this.model.save_changes();
  }

  kernelNow() {
    return Date.now() + this.offset;
  }

  handleMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (typeof msg.now === "number") this.offset = msg.now - Date.now();
    if (msg.type === "details") {
      onDetailsMessage(this, msg); // details.js
    } else if (msg.type === "snapshot") {
      const rows = {};
      for (const row of msg.rows || []) rows[row.id] = row;
      this.seq = msg.seq;
      this.reset(rows, msg.header || {}, msg.eta);
    } else if (msg.type === "patch") {
      if (typeof msg.seq === "number" && msg.seq <= this.seq) return; // already in a snapshot
      this.seq = msg.seq;
      this.applyPatch(msg);
      if (msg.finished) notifyFinished(this.model, msg.finished); // notify.js
      if (msg.timeline && this.insight) this.insight.timeline.applyDelta(msg.timeline);
    } else if (msg.type === "timeline" && this.insight) {
      this.insight.timeline.setFull(msg, buffers);
    }
  }

  reset(rows, header, eta) {
    const keep = new Set(Object.keys(rows));
    const remove = [...this.rows.keys()].filter((id) => !keep.has(id));
    this.applyPatch({ upsert: Object.values(rows), remove, header, eta });
  }

  applyPatch(msg) {
    let reorder = false;
    for (const id of msg.remove || []) {
      const view = this.rows.get(id);
      if (view) {
        view.el.remove();
        this.rows.delete(id);
        forgetDetails(this, id); // details.js
      }
    }
    for (const row of msg.upsert || []) {
      const view = this.rows.get(row.id);
      if (view) {
        const old = view.row;
        reorder ||= old.status !== row.status || old.priority !== row.priority;
        if (row.eta === undefined && old.status === row.status) row.eta = old.eta; // eta.js
        view.update(row);
      } else {
        this.rows.set(row.id, new RowView(this, row));
        reorder = true;
      }
    }
    for (const [id, pct] of msg.progress || []) {
      const view = this.rows.get(id);
      if (view) view.setProgress(pct);
    }
    for (const [id, at] of msg.eta || []) {
      const view = this.rows.get(id);
      if (view) {
        view.row.eta = at;
        view.tick();
      }
    }
    if (reorder || this.sort || (msg.remove && msg.remove.length)) this.reorder();
    if (msg.header && Object.keys(msg.header).length) this.renderHeader(msg.header);
    this.empty.hidden = this.rows.size > 0;
  }

  reorder() {
    const ordered = [...this.rows.values()].sort(rowComparator(this)); // details.js
    if (!this.body.firstChild) {
      // First fill: one insertion into the live document.
      const fragment = document.createDocumentFragment();
      for (const view of ordered) fragment.appendChild(view.el);
      this.body.appendChild(fragment);
      return;
    }
    // Move only the nodes that are out of place.
    let ref = this.body.firstChild;
    for (const view of ordered) {
      if (view.el === ref) ref = ref.nextSibling;
      else this.body.insertBefore(view.el, ref);
    }
  }

  renderHeader(header) {
    this.header = header;
    const running = Boolean(header.running);
    this.stateEl.textContent = running ? "running" : "stopped";
    this.stateEl.dataset.running = String(running);
    this.busyEl.textContent = `busy ${header.busy ?? 0}/${header.max_workers ?? 0}`;
    const counts = header.counts || {};
    for (const status of STATUSES) {
      const el = this.countEls[status];
      const n = counts[status] || 0;
      el.setAttribute(`data-count-${status}`, String(n));
      el.lastChild.textContent = String(n);
    }
    const more = header.more || 0;
    this.more.textContent = more ? `${more} more not shown` : "";
    this.more.hidden = !more;
    if (this.insight) this.insight.renderHeader(header);
  }

  renderNote() {
    const note = this.model.get("note") || "";
    this.note.textContent = note;
    this.note.hidden = !note;
  }

  tick() {
    if (!this.root.isConnected) return;
    for (const view of this.rows.values()) {
      if (view.row.status === "running") view.tick();
    }
    tickDetails(this); // details.js
    if (this.insight) this.insight.tick();
  }

  destroy() {
    clearInterval(this.timer);
    if (this.resizer) this.resizer.disconnect();
    if (this.insight) this.insight.destroy();
    this.model.off("msg:custom", this.onMsg);
    this.model.off("change:note", this.onNote);
    this.model.off("change:status_filter", this.onFilter);
    this.model.off("change:_rows", this.onState);
    destroySearch(this); // details.js
  }
}

function render({ model, el }) {
  const view = new DashboardView(model, el);
  return () => view.destroy();
}

export default { render };
