// ETAs and wall-clock times (part of the dashboard's ES module; see _ESM_PARTS in _dashboard.py).
//
// The kernel sends each running task's estimated finish as epoch milliseconds (a smoothed rate of
// the task's own progress, task_worker/_eta.py), only when it means something and only when it
// moved; the remaining time counts down here, with the rows' elapsed time. Overdue estimates show
// nothing rather than a negative or frozen number.

function fmtRemaining(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const sec = s % 60;
  const min = Math.floor(s / 60) % 60;
  const hours = Math.floor(s / 3600);
  const pad = (n) => String(n).padStart(2, "0");
  if (hours >= 48) return `${Math.round(hours / 24)} days`;
  return hours ? `${hours}:${pad(min)}:${pad(sec)}` : `${min}:${pad(sec)}`;
}

// "~1:23 left" for a running row with an estimate that is still ahead, else "".
function etaText(row, now) {
  if (!row || row.status !== "running" || typeof row.eta !== "number") return "";
  const left = row.eta - now;
  if (!(left > 500)) return "";
  return `~${fmtRemaining(left)} left`;
}

// Local wall-clock time of an epoch-ms timestamp: the time of day, with the date when not today.
function localTime(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return "";
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString()} ${time}`;
}

// The tooltip of a row's elapsed time: when it was queued, started and finished (local time).
function timesTitle(row) {
  if (!row) return "";
  const parts = [];
  if (row.created) parts.push(`queued ${localTime(row.created)}`);
  if (row.started) parts.push(`started ${localTime(row.started)}`);
  if (row.completed) parts.push(`finished ${localTime(row.completed)}`);
  return parts.join(", ");
}
