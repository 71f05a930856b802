// Live updates over Server-Sent Events: the overview's figures, and a job's status.
// Plain browser JavaScript, no build step; the pages work without it, only not live.
"use strict";

function setText(root, field, text) {
  const cell = root.querySelector(`[data-field="${field}"]`);
  if (cell && cell.textContent !== text) cell.textContent = text;
  return cell;
}

function followOverview(table) {
  const source = new EventSource(table.dataset.events);
  source.addEventListener("overview", (message) => {
    const data = JSON.parse(message.data);
    for (const row of table.querySelectorAll("tbody tr[data-group]")) {
      const group = data.groups[row.dataset.group];
      if (!group) continue;
      for (const [field, text] of Object.entries(group.figures)) {
        const cell = setText(row, field, text);
        if (cell) cell.classList.toggle("attention", group.attention.includes(field));
      }
    }
    const problems = document.getElementById("problems");
    const text = data.problems.join("\n");
    if (problems && problems.textContent.trim() !== text) {
      problems.replaceChildren(...data.problems.map((p) => {
        const line = document.createElement("p");
        line.className = "problem";
        line.textContent = p;
        return line;
      }));
    }
  });
}

const FINAL = ["succeeded", "failed", "dead", "cancelled"];

function followJob(section) {
  const shown = section.dataset.status;
  const source = new EventSource(section.dataset.events);
  source.addEventListener("status", (message) => {
    const data = JSON.parse(message.data);
    const status = setText(section, "status", data.status);
    if (status) status.className = `status-${data.status}`;
    setText(section, "attempts", String(data.attempts));
    setText(section, "updated_at", data.updated_at || "-");
    setText(section, "last_error", data.last_error || "-");
    // A job that ended since the page was drawn: draw it again, with its result and times.
    if (FINAL.includes(data.status) && data.status !== shown) window.location.reload();
  });
  // The job ended: nothing more will come, so the browser must not reconnect.
  source.addEventListener("end", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  const overview = document.getElementById("overview");
  if (overview) followOverview(overview);
  const live = document.getElementById("live");
  if (live) followJob(live);
});
