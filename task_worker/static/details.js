// Task details, sorting and the text filter (concatenated before dashboard.js, which calls these
// top-level functions from small hooks; see _ESM_PARTS in task_worker/_dashboard.py).
//
// Details: clicking a row opens a pane under it and asks the kernel for that task's details
// ({type: "details", id, view}); the reply carries this view's token, so other views of the same
// model (the comm broadcasts) ignore it. The pane is text only (textContent), refreshed when the
// row's status changes and every few seconds while the task runs.
// Sorting: clicking a column header sorts the rows this view holds by that column, ascending, then
// descending, then back to the kernel's order; ties keep the kernel's order (a stable sort).
// The text filter box (in the Task column's header) sets the synced trait "text_filter": the kernel picks matching rows among
// all its tasks (the browser holds only the rows shown), so the browser stays O(rows shown).

const SORT_KEYS = ["name", "priority", "status", "progress", "elapsed", null];
const STATUS_RANK = { running: 0, pending: 1, failed: 2, cancelled: 3, completed: 4 };
const DETAILS_REFRESH_MS = 3000;
const SEARCH_DELAY_MS = 250;

function detailsToken() {
  return `v${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36)}`;
}

// ------------------------------------------------------------------------------ details pane
// One listener on the table's body for all rows (rows cost nothing extra to build).
function bodyClicked(view, event) {
  const target = event.target;
  if (!(target instanceof Element)) return;
  // Buttons, the traceback toggle, links and the pane itself keep their own behaviour.
  if (target.closest("button, summary, a, input, select, .tw-details")) return;
  const rowEl = target.closest(".tw-row");
  const rowView = rowEl && view.rows.get(rowEl.dataset.taskId);
  if (!rowView || rowView.el !== rowEl) return;
  const sel = window.getSelection && window.getSelection();
  if (sel && String(sel).length) return; // selecting text is not a click
  toggleDetails(rowView);
}

function toggleDetails(rowView) {
  if (rowView.pane) closeDetails(rowView);
  else openDetails(rowView);
}

function openDetails(rowView) {
  const view = rowView.view;
  const pane = h("div", "tw-details");
  pane.dataset.taskId = rowView.row.id;
  pane.setAttribute("role", "region");
  pane.setAttribute("aria-label", `details of ${rowView.row.name}`);
  pane.appendChild(h("div", "tw-details-loading", "loading details…"));
  rowView.pane = rowView.el.appendChild(pane);
  rowView.el.classList.add("tw-open");
  rowView.el.setAttribute("aria-expanded", "true");
  view.openPanes.set(rowView.row.id, rowView);
  requestDetails(rowView);
}

function closeDetails(rowView) {
  if (!rowView.pane) return;
  rowView.pane.remove();
  rowView.pane = null;
  rowView.el.classList.remove("tw-open");
  rowView.el.setAttribute("aria-expanded", "false");
  rowView.view.openPanes.delete(rowView.row.id);
}

function requestDetails(rowView) {
  const view = rowView.view;
  if (!view.detailsToken) view.detailsToken = detailsToken();
  rowView.detailsAsked = Date.now();
  view.model.send({ type: "details", id: rowView.row.id, view: view.detailsToken });
}

// Called by the view for every "details" message: only this view's replies count.
function onDetailsMessage(view, msg) {
  if (msg.view !== view.detailsToken || typeof msg.id !== "string") return;
  const rowView = view.openPanes.get(msg.id);
  if (!rowView || !rowView.pane) return;
  renderDetails(rowView.pane, msg.details, view);
}

// Called from RowView.update: a status change (or a running task's pane getting old) refreshes it.
function rowUpdated(rowView, old) {
  if (!rowView.pane) return;
  if (!old || old.status !== rowView.row.status) requestDetails(rowView);
}

// Called from the view's 1 s tick: running tasks' panes refresh every DETAILS_REFRESH_MS.
function tickDetails(view) {
  const now = Date.now();
  for (const rowView of view.openPanes.values()) {
    if (!rowView.pane || !rowView.el.isConnected) continue;
    if (rowView.row.status === "running" && now - (rowView.detailsAsked || 0) >= DETAILS_REFRESH_MS) {
      requestDetails(rowView);
    }
  }
}

function forgetDetails(view, id) {
  view.openPanes.delete(id);
}

function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  return fmtElapsed(s * 1000);
}

function fmtWhen(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  // Local wall-clock time, with the date when it is not today.
  const today = new Date();
  const time = d.toLocaleTimeString();
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

function renderDetails(pane, d, view) {
  pane.textContent = "";
  if (!d) {
    pane.appendChild(h("div", "tw-details-gone", "This task is no longer known to the worker."));
    return;
  }
  const list = pane.appendChild(h("dl", "tw-details-list"));
  const field = (name, label, value) => {
    const item = list.appendChild(h("div", "tw-details-item"));
    item.dataset.field = name;
    item.appendChild(h("dt", null, label));
    item.appendChild(h("dd", null, value));
  };
  field("id", "id", d.id);
  field("name", "name", d.name);
  field("status", "status", `${d.status} (${Number(d.progress || 0).toFixed(1)}%)`);
  field("priority", "priority", String(d.priority));
  field("arguments", "arguments", d.arguments);
  for (const [key, value] of d.metadata || []) field(`meta-${key}`, key, value);
  field("created", "created", fmtWhen(d.created));
  field("started", "started", fmtWhen(d.started));
  field("completed", "finished", fmtWhen(d.completed));
  field("queue_wait", "queue wait", fmtSeconds(d.queue_wait));
  field("run_time", "run time", fmtSeconds(d.run_time));
  field("cpu", "CPU time", d.cpu_text || "n/a");
  if (d.error) {
    const err = pane.appendChild(h("div", "tw-details-error", d.error));
    err.dataset.field = "error";
  }
  if (d.traceback) {
    const tb = pane.appendChild(h("pre", "tw-details-traceback", d.traceback));
    tb.dataset.field = "traceback";
  }
  if (d.output !== undefined && d.output !== null) {
    pane.appendChild(h("div", "tw-details-label", "last output"));
    const out = pane.appendChild(h("pre", "tw-details-output", d.output || "(no output yet)"));
    out.dataset.field = "output";
  }
}

// ------------------------------------------------------------------------------------ sorting
function sortValue(view, row, key) {
  switch (key) {
    case "name": return String(row.name || "").toLowerCase();
    case "priority": return Number(row.priority) || 0;
    case "status": return STATUS_RANK[row.status] ?? 9;
    case "progress": return Number(row.progress) || 0;
    case "elapsed": {
      if (!row.started) return -1;
      const end = row.completed || (row.status === "running" ? view.kernelNow() : row.started);
      return end - row.started;
    }
    default: return 0;
  }
}

// The comparator the view orders its rows with: the kernel's order unless a column is sorted.
function rowComparator(view) {
  const sort = view.sort;
  if (!sort) return (a, b) => compareRows(a.row, b.row);
  const dir = sort.dir === "desc" ? -1 : 1;
  return (a, b) => {
    const va = sortValue(view, a.row, sort.key);
    const vb = sortValue(view, b.row, sort.key);
    if (va < vb) return -dir;
    if (va > vb) return dir;
    return compareRows(a.row, b.row); // ties: the kernel's order
  };
}

function makeSortable(view, headCell, index) {
  const key = SORT_KEYS[index];
  if (!key) return;
  headCell.dataset.sort = key;
  headCell.setAttribute("aria-sort", "none");
  headCell.tabIndex = 0;
  headCell.title = "Sort by this column (click again: descending, then the default order)";
  const activate = () => cycleSort(view, key);
  // The filter box sits in the Task column's header: typing or clicking there does not sort.
  const fromBox = (e) => e.target instanceof Element && e.target.closest("input");
  headCell.addEventListener("click", (e) => {
    if (!fromBox(e)) activate();
  });
  headCell.addEventListener("keydown", (e) => {
    if (fromBox(e)) return;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      activate();
    }
  });
  if (!view.sortHeads) view.sortHeads = [];
  view.sortHeads.push(headCell);
  if (key === "name") buildSearch(view, headCell);
}

function cycleSort(view, key) {
  const cur = view.sort;
  if (!cur || cur.key !== key) view.sort = { key, dir: "asc" };
  else if (cur.dir === "asc") view.sort = { key, dir: "desc" };
  else view.sort = null;
  for (const cell of view.sortHeads || []) {
    const active = view.sort && view.sort.key === cell.dataset.sort;
    cell.setAttribute("aria-sort", active ? (view.sort.dir === "asc" ? "ascending" : "descending") : "none");
    cell.classList.toggle("tw-sorted", Boolean(active));
  }
  view.reorder();
}

// ------------------------------------------------------------------------------- text filter
function buildSearch(view, parent) {
  const box = parent.appendChild(h("input", "tw-search"));
  box.type = "search";
  box.placeholder = "filter";
  box.title = "Show only tasks whose name, id or metadata contain this text (among all tasks)";
  box.setAttribute("aria-label", "Filter tasks by name, id or metadata");
  box.maxLength = 200;
  box.value = view.model.get("text_filter") || "";
  let timer = null;
  box.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      view.model.set("text_filter", box.value);
      view.model.save_changes();
    }, SEARCH_DELAY_MS);
  });
  view.onTextFilter = () => {
    const value = view.model.get("text_filter") || "";
    if (document.activeElement !== box && box.value !== value) box.value = value;
    view.root.classList.toggle("tw-filtered", Boolean(value));
  };
  view.model.on("change:text_filter", view.onTextFilter);
  view.onTextFilter();
  view.searchBox = box;
}

function destroySearch(view) {
  if (view.onTextFilter) view.model.off("change:text_filter", view.onTextFilter);
}
