// Notifications when tasks finish (part of the dashboard's ES module; see _ESM_PARTS).
//
// The kernel sends, in its coalesced patches, the finished tasks whose outcome the dashboard's
// `notify` trait asks for (completed and/or failed; never cancelled ones). Here a task is notified
// when the page is hidden, or when it ran at least `notify_after` seconds. One finished task gives
// one notification; a burst within one patch is summed up in a single one. Each task is notified
// once per page, even when several views (a %%task view and %tasks) show it.
//
// Where: a browser notification (the Notification API, when permission is granted; clicking it
// brings this tab to the front), and a JupyterLab toast where JupyterLab's notification area is
// reachable. An anywidget module gets only its model and element; JupyterLab 4's toasts
// (@jupyterlab/apputils Notification, the "apputils:notify" command) are reachable from it only
// through the application object, which JupyterLab puts on `window.jupyterapp` when started with
// --LabApp.expose_app_in_browser (Notebook 7: --JupyterNotebookApp.expose_app_in_browser).
// Without it there is no toast, only the browser notification.

const NOTIFIED_KEY = "__task_worker_notified__";

function notifiedSet() {
  if (!globalThis[NOTIFIED_KEY]) globalThis[NOTIFIED_KEY] = new Set();
  return globalThis[NOTIFIED_KEY];
}

function pageHidden() {
  return document.visibilityState === "hidden" || document.hidden === true;
}

function notifyPermission() {
  return typeof Notification === "undefined" ? "unsupported" : Notification.permission;
}

// items: [[id, name, status, ranMs, completedMs]...] from the kernel. Returns what was shown.
function notifyFinished(model, items) {
  const kinds = new Set(String(model.get("notify") || "").split(",").filter(Boolean));
  if (!kinds.size || !Array.isArray(items)) return null;
  const after = Number(model.get("notify_after"));
  const threshold = (isFinite(after) && after >= 0 ? after : 10) * 1000;
  const hidden = pageHidden();
  const seen = notifiedSet();
  const due = [];
  for (const item of items) {
    if (!Array.isArray(item) || item.length < 5) continue;
    const [id, name, status, ran, completed] = item;
    if (!kinds.has(status) || (status !== "completed" && status !== "failed")) continue;
    if (!hidden && !(Number(ran) >= threshold)) continue;
    const key = `${id}@${completed}`;
    if (seen.has(key)) continue;
    seen.add(key);
    due.push({ id: String(id), name: String(name), status, ran: Number(ran) || 0 });
  }
  if (!due.length) return null;
  let title;
  let body;
  let tag;
  const failed = due.filter((d) => d.status === "failed").length;
  if (due.length === 1) {
    const d = due[0];
    title = `Task ${d.name} ${d.status}`;
    body = `ran ${fmtElapsed(d.ran)}` + (d.name !== d.id ? ` (id ${d.id})` : "");
    tag = `task-worker-${d.id}`;
  } else {
    title = `${due.length} tasks finished` + (failed ? `, ${failed} failed` : "");
    body = due.slice(0, 5).map((d) => `${d.name}: ${d.status}`).join("\n") + (due.length > 5 ? "\n…" : "");
    tag = `task-worker-batch-${due[0].id}`;
  }
  const shown = { title, body, tag, failed, browser: false, toast: false };
  if (notifyPermission() === "granted") {
    try {
      const n = new Notification(title, { body, tag });
      n.onclick = () => {
        window.focus();
        n.close();
      };
      shown.browser = true;
    } catch (err) {
      // Some browsers only allow notifications from a service worker: the toast still comes.
      console.warn("task_worker: notification failed", err);
    }
  }
  shown.toast = labToast(failed ? "error" : "success", `${title}: ${body.split("\n")[0]}`);
  return shown;
}

function labToast(type, message) {
  const app = window.jupyterapp;
  const commands = app && app.commands;
  if (!commands || typeof commands.hasCommand !== "function" || !commands.hasCommand("apputils:notify")) {
    return false;
  }
  commands.execute("apputils:notify", { message, type, options: { autoClose: 8000 } }).catch(() => {});
  return true;
}

// The header toggle: on asks the browser's permission (first time only; needs the click).
function buildNotifyToggle(view) {
  const button = h("button", "tw-notify");
  button.type = "button";
  const render = () => {
    const on = Boolean(view.model.get("notify"));
    const perm = notifyPermission();
    button.setAttribute("aria-pressed", String(on));
    button.dataset.permission = perm;
    button.textContent = on ? "Notify: on" : "Notify: off";
    const after = Number(view.model.get("notify_after"));
    button.title = on
      ? `Notifies when a task ${String(view.model.get("notify")).replace(",", " or ")} while this page is hidden ` +
        `or after running ${isFinite(after) ? after : 10} s or more` +
        (perm === "granted" ? "" : perm === "denied" ? " (browser notifications are blocked for this site)" : "")
      : "Notify when tasks finish while this page is hidden or after a long run";
  };
  button.addEventListener("click", async () => {
    const on = !view.model.get("notify");
    if (on && notifyPermission() === "default") {
      try {
        await Notification.requestPermission();
      } catch (err) {
        console.warn("task_worker: notification permission request failed", err);
      }
    }
    view.model.set("notify", on ? "completed,failed" : "");
    view.model.save_changes();
    render();
  });
  view.model.on("change:notify", render);
  view.model.on("change:notify_after", render);
  render();
  return {
    el: button,
    destroy() {
      view.model.off("change:notify", render);
      view.model.off("change:notify_after", render);
    },
  };
}
