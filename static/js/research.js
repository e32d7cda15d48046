// The research page: start a research run, follow its stages live, then show the stored report.
import { el, readConfig } from "./dom.js";
import { api } from "./http.js";
import { LiveSocket } from "./socket.js";

const config = readConfig("research-config");
const $ = (id) => document.getElementById(id);
const STAGES = ["planning", "searching", "writing"];

let run = null; // {runId, reportId, lastSeq}
let socket = null;
let shownPlan = 0;

function say(text, kind = "warn") {
  $("research-status").replaceChildren(...(text ? [el("p", { class: `alert ${kind}` }, text)] : []));
}

function showStage(stage) {
  const at = STAGES.indexOf(stage);
  for (const li of document.querySelectorAll(".stages li")) {
    const index = STAGES.indexOf(li.dataset.stage);
    li.classList.toggle("done", index < at);
    li.classList.toggle("active", index === at);
    if (index === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

function onProgress(event) {
  showStage(event.stage);
  if (event.plan.length && shownPlan !== event.plan.length) {
    shownPlan = event.plan.length;
    $("searches").replaceChildren(...event.plan.map((search, i) => el("li", { class: "pending", "data-index": i }, search.query)));
  }
  if (event.stage !== "planning") $("search-count").textContent = `(${event.completed} of ${event.total})`;
  const search = event.search;
  if (search) {
    const li = $("searches").querySelector(`[data-index="${search.index}"]`);
    if (li) {
      li.className = search.status === "completed" ? "done" : "failed";
      if (search.error) li.append(el("span", { class: "small" }, ` — failed: ${search.error}`));
    }
  }
}

function onEvent(event) {
  if (!run || event.run_id !== run.runId) {
    if (event.seq === undefined && event.type === "error") say(event.message, "error");
    return;
  }
  if (event.seq <= run.lastSeq) return;
  run.lastSeq = event.seq;
  if (event.type === "research_progress") onProgress(event);
  else if (event.type === "stream_complete" || event.type === "error") {
    socket.close();
    $("cancel").classList.add("hidden");
    if (event.type === "error") say(`The research failed: ${event.message}`, "error");
    else say(event.status === "cancelled" ? "Cancelled." : "Done: loading the report…", "ok");
    location.assign(`/research/${run.reportId}/`);
  }
}

function follow(runId, reportId) {
  run = { runId, reportId, lastSeq: 0 };
  shownPlan = 0;
  $("report")?.remove();
  $("progress").classList.remove("hidden");
  $("searches").replaceChildren();
  $("search-count").textContent = "";
  showStage("planning");
  $("cancel").classList.remove("hidden");
  socket?.close();
  socket = new LiveSocket("/ws/agents/research/", {
    onEvent,
    onOpen: () => {
      socket.send({ type: "resume", run_id: run.runId, last_event_id: run.lastSeq });
      if (run.cancelWanted) socket.send({ type: "cancel", run_id: run.runId });
    },
    onNotice: say,
  });
}

async function start(question) {
  $("start").disabled = true;
  try {
    const started = await api("/api/research/", { method: "POST", body: { query: question } });
    $("progress-query").textContent = started.query;
    history.pushState({}, "", `/research/${started.report_id}/`);
    follow(started.run_id, started.report_id);
    $("question").value = "";
  } catch (error) {
    say(error.message, "error"); // the question stays in the box
  } finally {
    $("start").disabled = false;
  }
}

$("research-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (question) start(question);
});
$("cancel").addEventListener("click", () => {
  if (!run) return;
  // Sent now, or as soon as the socket (re)opens: a click while it connects is not lost.
  run.cancelWanted = true;
  if (!socket?.send({ type: "cancel", run_id: run.runId })) say("Cancelling as soon as the connection is back…", "ok");
});
for (const button of document.querySelectorAll("button.followup")) {
  button.addEventListener("click", () => {
    $("question").value = button.dataset.question;
    start(button.dataset.question);
  });
}
window.addEventListener("popstate", () => location.reload());

if (config.report?.active) {
  $("progress-query").textContent = document.querySelector("#report h2")?.textContent || "";
  follow(config.report.run_id, config.report.id);
}
