// The dashboard's Timeline tab (part of the dashboard's ES module; see _ESM_PARTS).
//
// One horizontal bar per task on a shared time axis: the time it waited in the queue (pale) and
// the time it ran (in its status colour), newest task on top, with the spans during which the
// kernel's event loop was blocked ("starved") shaded across the chart. Drawn on a canvas, only the
// rows in view (a scroll container with a spacer the height of all rows), so 10,000 tasks cost
// what the 20 visible ones cost. Zoom: all, or the last N minutes (then only tasks overlapping
// that window are listed). Hover a bar for the task; click to pin it below the chart.
//
// Data (task_worker/_timeline.py): asked for when the tab first opens; the kernel answers with
// columns plus one float64 buffer (created, started, completed per task, epoch ms, NaN when
// unknown), then sends only changes inside its coalesced patches.
//
// Stable hooks for browser tests: .tw-insight (the tab bar) with button.tw-tab[data-tab], the
// panel .tw-timeline with canvas.tw-tl-canvas[data-tasks][data-visible][data-drawn][data-starved],
// select.tw-tl-zoom, the tooltip .tw-tl-tip[data-task-id] and the pinned .tw-tl-info[data-task-id].

const TL_ROW = 16;
const TL_BAR = 10;
const TL_AXIS = 24;
const TL_HEIGHT = 320;
const TL_NAME_W = 150;
const TL_MAX_TASKS = 10000;
const TL_STATUS = { p: "pending", r: "running", c: "completed", f: "failed", x: "cancelled" };
const TL_ZOOMS = [["all", "all"], ["60", "last 60 min"], ["15", "last 15 min"], ["5", "last 5 min"], ["1", "last 1 min"]];
const TL_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
  .map((s) => s * 1000);

function tlNum(v) {
  return typeof v === "number" && isFinite(v) ? v : NaN;
}

class TimelineData {
  constructor() {
    this.clear();
  }

  clear() {
    this.ids = [];
    this.names = [];
    this.codes = [];
    this.created = [];
    this.started = [];
    this.completed = [];
    this.index = new Map();
    this.starved = [];
    this.version = 0;
    this.loaded = false;
  }

  setFull(msg, buffers) {
    this.clear();
    const n = Math.max(0, Number(msg.count) || 0);
    let view = buffers && buffers[0];
    if (view && !(view instanceof DataView)) {
      view = ArrayBuffer.isView(view) ? new DataView(view.buffer, view.byteOffset, view.byteLength) : new DataView(view);
    }
    const ids = msg.ids || [];
    const names = msg.names || [];
    const codes = String(msg.status || "");
    for (let i = 0; i < n && i < ids.length; i++) {
      const at = i * 24;
      const ok = view && view.byteLength >= at + 24;
      this.put(String(ids[i]), String(names[i] ?? ids[i]), codes[i] || "p",
        ok ? view.getFloat64(at, true) : NaN, ok ? view.getFloat64(at + 8, true) : NaN,
        ok ? view.getFloat64(at + 16, true) : NaN);
    }
    this.starved = (msg.starved || []).map(([a, b]) => [tlNum(a), tlNum(b)]);
    this.trim();
    this.loaded = true;
    this.version++;
  }

  put(id, name, code, created, started, completed) {
    let i = this.index.get(id);
    if (i === undefined) {
      i = this.ids.length;
      this.index.set(id, i);
      this.ids.push(id);
      this.names.push(name);
      this.codes.push(code);
      this.created.push(created);
      this.started.push(started);
      this.completed.push(completed);
      return;
    }
    this.names[i] = name;
    this.codes[i] = code;
    this.created[i] = created;
    this.started[i] = started;
    this.completed[i] = completed;
  }

  applyDelta(delta) {
    if (!this.loaded || !delta) return;
    const ids = delta.ids || [];
    const times = delta.times || [];
    const codes = String(delta.status || "");
    for (let i = 0; i < ids.length; i++) {
      this.put(String(ids[i]), String((delta.names || [])[i] ?? ids[i]), codes[i] || "p",
        tlNum(times[3 * i]), tlNum(times[3 * i + 1]), tlNum(times[3 * i + 2]));
    }
    if (delta.remove && delta.remove.length) this.remove(new Set(delta.remove.map(String)));
    for (const [a, b] of delta.starved || []) this.starved.push([tlNum(a), tlNum(b)]);
    if (this.starved.length > 1000) this.starved.splice(0, this.starved.length - 1000);
    this.trim();
    this.version++;
  }

  remove(gone) {
    const keep = [];
    for (let i = 0; i < this.ids.length; i++) if (!gone.has(this.ids[i])) keep.push(i);
    const pick = (arr) => keep.map((i) => arr[i]);
    this.ids = pick(this.ids);
    this.names = pick(this.names);
    this.codes = pick(this.codes);
    this.created = pick(this.created);
    this.started = pick(this.started);
    this.completed = pick(this.completed);
    this.index = new Map(this.ids.map((id, i) => [id, i]));
  }

  trim() {
    // The oldest tasks beyond TL_MAX_TASKS leave the chart (the kernel sends at most that many).
    const extra = this.ids.length - TL_MAX_TASKS;
    if (extra <= 0) return;
    const order = this.ids.map((_, i) => i).sort((a, b) => this.created[a] - this.created[b]);
    this.remove(new Set(order.slice(0, extra).map((i) => this.ids[i])));
  }

  status(i) {
    return TL_STATUS[this.codes[i]] || "pending";
  }
}

class TimelineView {
  constructor(dash) {
    this.dash = dash;
    this.data = new TimelineData();
    this.requested = false;
    this.visible = false;
    this.frame = 0;
    this.timer = null;
    this.orderVersion = -1;
    this.order = [];
    this.rowsShown = [];
    this.pinned = null;
    this.el = h("div", "tw-timeline");
    this.el.hidden = true;
    const controls = this.el.appendChild(h("div", "tw-tl-controls"));
    this.zoom = controls.appendChild(h("select", "tw-tl-zoom"));
    this.zoom.setAttribute("aria-label", "Time range");
    for (const [value, label] of TL_ZOOMS) {
      const opt = this.zoom.appendChild(h("option", null, label));
      opt.value = value;
    }
    this.zoom.addEventListener("change", () => this.schedule());
    const legend = controls.appendChild(h("span", "tw-tl-legend"));
    this.swatches = {};
    for (const status of ["queued", "running", "completed", "failed", "cancelled", "starved"]) {
      const key = legend.appendChild(h("span", `tw-tl-key tw-tl-key-${status} tw-status-${status}`));
      this.swatches[status] = key.appendChild(h("span", "tw-dot"));
      key.appendChild(h("span", null, status));
    }
    this.count = controls.appendChild(h("span", "tw-tl-count"));
    this.scroller = this.el.appendChild(h("div", "tw-tl-scroll"));
    this.scroller.style.height = `${TL_HEIGHT}px`;
    this.canvas = this.scroller.appendChild(h("canvas", "tw-tl-canvas"));
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "Timeline of the tasks");
    this.spacer = this.scroller.appendChild(h("div", "tw-tl-spacer"));
    this.tip = this.el.appendChild(h("div", "tw-tl-tip"));
    this.tip.hidden = true;
    this.tip.setAttribute("role", "tooltip");
    this.info = this.el.appendChild(h("div", "tw-tl-info"));
    this.info.hidden = true;
    this.scroller.addEventListener("scroll", () => this.schedule());
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => {
      this.tip.hidden = true;
    });
    this.canvas.addEventListener("click", (e) => this.pin(e));
  }

  show() {
    this.visible = true;
    this.el.hidden = false;
    if (!this.requested) {
      this.requested = true;
      this.dash.model.send({ type: "timeline" });
    }
    if (!this.timer) this.timer = setInterval(() => this.schedule(), 1000);
    this.schedule();
  }

  hide() {
    this.visible = false;
    this.el.hidden = true;
    this.tip.hidden = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  setFull(msg, buffers) {
    this.data.setFull(msg, buffers);
    this.schedule();
  }

  applyDelta(delta) {
    this.data.applyDelta(delta);
    if (this.visible) this.schedule();
  }

  schedule() {
    if (!this.visible || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  // Newest first (by creation), recomputed only when the data changed.
  sorted() {
    const d = this.data;
    if (this.orderVersion !== d.version) {
      this.order = d.ids.map((_, i) => i).sort((a, b) => d.created[b] - d.created[a] || b - a);
      this.orderVersion = d.version;
    }
    return this.order;
  }

  range(now) {
    const d = this.data;
    const zoom = this.zoom.value;
    if (zoom !== "all") return [now - Number(zoom) * 60000, now];
    let t0 = Infinity;
    for (const c of d.created) if (c < t0) t0 = c;
    if (!isFinite(t0)) t0 = now - 60000;
    return [t0, now + Math.max(1000, (now - t0) * 0.02)];
  }

  draw() {
    if (!this.visible || !this.el.isConnected) return;
    const d = this.data;
    const now = this.dash.kernelNow();
    const [t0, t1] = this.range(now);
    const windowed = this.zoom.value !== "all";
    const rows = [];
    for (const i of this.sorted()) {
      if (windowed) {
        const end = isFinite(d.completed[i]) ? d.completed[i] : now;
        if (end < t0 || d.created[i] > t1) continue;
      }
      rows.push(i);
    }
    this.rowsShown = rows;
    const width = Math.max(200, this.scroller.clientWidth);
    const height = TL_HEIGHT;
    this.spacer.style.height = `${Math.max(0, rows.length * TL_ROW + TL_AXIS + 4 - height)}px`;
    const dpr = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const colors = {};
    for (const [k, el] of Object.entries(this.swatches)) colors[k] = getComputedStyle(el).backgroundColor;
    const fg = getComputedStyle(this.el).color;
    const nameW = width >= 520 ? TL_NAME_W : 0;
    const x0 = nameW + 4;
    const plotW = Math.max(10, width - x0 - 8);
    const span = Math.max(1, t1 - t0);
    const x = (t) => x0 + ((t - t0) / span) * plotW;
    this.geometry = { t0, span, x0, plotW };
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    // Time axis and grid (local wall-clock time).
    const step = TL_STEPS.find((s) => (plotW / (span / s)) >= 90) || TL_STEPS[TL_STEPS.length - 1];
    ctx.strokeStyle = fg;
    ctx.fillStyle = fg;
    ctx.globalAlpha = 0.12;
    ctx.fillRect(x0, TL_AXIS - 1, plotW, 1);
    const offset = new Date(t0).getTimezoneOffset() * 60000;
    for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) {
      const px = Math.round(x(t)) + 0.5;
      ctx.globalAlpha = 0.1;
      ctx.beginPath();
      ctx.moveTo(px, TL_AXIS);
      ctx.lineTo(px, height);
      ctx.stroke();
      ctx.globalAlpha = 0.75;
      const label = new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
        second: step < 60000 ? "2-digit" : undefined });
      ctx.fillText(label, Math.min(px + 3, width - 60), TL_AXIS / 2);
    }
    // Starved spans: shaded across the chart, solid on the axis.
    let starvedShown = 0;
    for (const [a, b] of d.starved) {
      if (!(b >= t0 && a <= t1)) continue;
      starvedShown++;
      const xa = Math.max(x0, x(a));
      const w = Math.max(2, Math.min(x0 + plotW, x(b)) - xa);
      ctx.fillStyle = colors.starved;
      ctx.globalAlpha = 0.18;
      ctx.fillRect(xa, TL_AXIS, w, height - TL_AXIS);
      ctx.globalAlpha = 0.9;
      ctx.fillRect(xa, TL_AXIS - 4, w, 3);
    }
    // The rows in view, and only those.
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / TL_ROW));
    const last = Math.min(rows.length, first + Math.ceil((height - TL_AXIS) / TL_ROW) + 1);
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, TL_AXIS, width, height - TL_AXIS);
    ctx.clip();
    let drawn = 0;
    for (let k = first; k < last; k++) {
      const i = rows[k];
      const y = TL_AXIS + 2 + k * TL_ROW - top;
      const status = d.status(i);
      const created = d.created[i];
      const started = d.started[i];
      const completed = d.completed[i];
      const queuedEnd = isFinite(started) ? started : isFinite(completed) ? completed : now;
      const runEnd = isFinite(completed) ? completed : now;
      const by = y + (TL_ROW - TL_BAR) / 2;
      if (this.pinned === d.ids[i]) {
        ctx.globalAlpha = 0.12;
        ctx.fillStyle = fg;
        ctx.fillRect(0, y, width, TL_ROW);
      }
      ctx.globalAlpha = 0.45;
      ctx.fillStyle = colors.queued;
      ctx.fillRect(x(created), by + 2, Math.max(1, x(queuedEnd) - x(created)), TL_BAR - 4);
      if (isFinite(started)) {
        ctx.globalAlpha = 1;
        ctx.fillStyle = colors[status] || colors.running;
        ctx.fillRect(x(started), by, Math.max(2, x(runEnd) - x(started)), TL_BAR);
      }
      if (nameW) {
        ctx.globalAlpha = 0.85;
        ctx.fillStyle = fg;
        let name = d.names[i];
        if (name.length > 22) name = `${name.slice(0, 21)}…`;
        ctx.fillText(name, 4, y + TL_ROW / 2, nameW - 8);
      }
      drawn++;
    }
    ctx.restore();
    ctx.globalAlpha = 1;
    canvas.dataset.tasks = String(d.ids.length);
    canvas.dataset.visible = String(rows.length);
    canvas.dataset.drawn = String(drawn);
    canvas.dataset.starved = String(starvedShown);
    this.count.textContent = d.loaded
      ? `${rows.length} of ${d.ids.length} tasks` + (d.starved.length ? ` · starved ${d.starved.length}×` : "")
      : "loading…";
  }

  taskAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const y = event.clientY - rect.top;
    if (y < TL_AXIS) return null;
    const k = Math.floor((y - TL_AXIS - 2 + this.scroller.scrollTop) / TL_ROW);
    const i = this.rowsShown[k];
    return i === undefined ? null : i;
  }

  describe(i) {
    const d = this.data;
    const now = this.dash.kernelNow();
    const status = d.status(i);
    const lines = [`${d.names[i]}  (id ${d.ids[i]})`, `status: ${status}`];
    const created = d.created[i];
    const started = d.started[i];
    const completed = d.completed[i];
    const queued = (isFinite(started) ? started : isFinite(completed) ? completed : now) - created;
    lines.push(`queued ${localTime(created)}, waited ${fmtElapsed(queued)}`);
    if (isFinite(started)) {
      lines.push(`started ${localTime(started)}, ran ${fmtElapsed((isFinite(completed) ? completed : now) - started)}`);
    }
    if (isFinite(completed)) lines.push(`finished ${localTime(completed)}`);
    const overlaps = d.starved.filter(([a, b]) => b >= (isFinite(started) ? started : created) &&
      a <= (isFinite(completed) ? completed : now));
    if (overlaps.length) {
      const total = overlaps.reduce((acc, [a, b]) => acc + (b - a), 0);
      lines.push(`starved: the loop was blocked ${overlaps.length}× (${fmtElapsed(total)}) meanwhile`);
    }
    return lines.join("\n");
  }

  hover(event) {
    const i = this.taskAt(event);
    if (i === null) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = this.describe(i);
    this.tip.dataset.taskId = this.data.ids[i];
    this.tip.dataset.status = this.data.status(i);
    const box = this.el.getBoundingClientRect();
    const left = Math.min(event.clientX - box.left + 12, Math.max(0, box.width - 320));
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${event.clientY - box.top + 14}px`;
    this.tip.hidden = false;
  }

  pin(event) {
    const i = this.taskAt(event);
    if (i === null) return;
    this.pinned = this.data.ids[i];
    this.info.textContent = this.describe(i);
    this.info.dataset.taskId = this.pinned;
    this.info.hidden = false;
    this.schedule();
  }

  destroy() {
    if (this.timer) clearInterval(this.timer);
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}

// The bar between the header and the table: Table / Timeline tabs, the whole queue's ETA (when
// the kernel can give one honestly) and the Notify toggle.
function insightInit(view) {
  const bar = h("div", "tw-insight");
  bar.setAttribute("role", "tablist");
  const tabs = {};
  const timeline = new TimelineView(view);
  const select = (name) => {
    for (const [key, tab] of Object.entries(tabs)) tab.setAttribute("aria-selected", String(key === name));
    view.root.classList.toggle("tw-show-timeline", name === "timeline");
    if (name === "timeline") timeline.show();
    else timeline.hide();
  };
  for (const [name, label] of [["table", "Table"], ["timeline", "Timeline"]]) {
    const tab = bar.appendChild(h("button", "tw-tab", label));
    tab.type = "button";
    tab.dataset.tab = name;
    tab.setAttribute("role", "tab");
    tab.addEventListener("click", () => select(name));
    tabs[name] = tab;
  }
  const eta = bar.appendChild(h("span", "tw-queue-eta"));
  eta.title = "When every task should be done: shown only when no task waits and every running task has an estimate";
  const notify = buildNotifyToggle(view);
  bar.appendChild(notify.el);
  view.root.insertBefore(bar, view.scroll);
  view.root.insertBefore(timeline.el, view.scroll.nextSibling);
  select("table");
  let queueEta = null;
  const renderEta = () => {
    const left = typeof queueEta === "number" ? queueEta - view.kernelNow() : NaN;
    const text = left > 500 ? `all done in ~${fmtRemaining(left)}` : "";
    if (eta.textContent !== text) eta.textContent = text;
    eta.hidden = !text;
    if (text) eta.dataset.eta = String(queueEta);
    else delete eta.dataset.eta;
  };
  return {
    bar,
    timeline,
    select,
    renderHeader(header) {
      queueEta = typeof header.eta === "number" ? header.eta : null;
      renderEta();
    },
    tick: renderEta,
    destroy() {
      timeline.destroy();
      notify.destroy();
    },
  };
}
