// The chat page: the open conversation's turns, the composer, and the conversation's socket.
import { ConversationList } from "./conversations.js";
import { el, readConfig } from "./dom.js";
import { api } from "./http.js";
import { LiveSocket } from "./socket.js";
import { TurnView } from "./turns.js";

const config = readConfig("chat-config");
const $ = (id) => document.getElementById(id);
const messages = $("messages");
const box = $("message");
const status = $("status");
const agentSelect = $("agent");

const BUSY = "This conversation is still answering: wait for the answer or press Stop, then send again.";

let conversation = config.conversation; // {id, agent, title} or null for a new one
let socket = null;
let turns = new Map(); // run id -> TurnView
let pending = null; // the text of a `run` sent and not yet answered
let generation = 0; // bumps when another conversation opens: late answers of the old one are dropped

function say(text, kind = "warn") {
  status.replaceChildren();
  if (text) status.append(el("p", { class: `alert ${kind}` }, text));
}

function showAgent() {
  const agent = config.agents.find((a) => a.slug === agentSelect.value);
  $("agent-model").textContent = agent ? `${agent.provider} · ${agent.model}` : "";
}

function activeTurn() {
  return [...turns.values()].find((turn) => !turn.ended);
}

function updateButtons() {
  const active = activeTurn();
  $("stop").classList.toggle("hidden", !active);
  $("send").disabled = Boolean(pending);
}

// A decision on a paused run's tool call, over the conversation's socket; its `approval_decided`
// event (or an `error`, e.g. when another tab decided first) comes back on it.
function decide(runId, approvalId, decision, reason) {
  const message = { type: decision, run_id: runId, approval_id: approvalId };
  if (reason) message.reason = reason;
  if (!socket?.send(message)) say("Not connected: decide again once the connection is back.", "error");
}

function addTurn(view) {
  $("empty")?.remove();
  view.onDecide = decide;
  turns.set(view.runId, view);
  messages.append(view.root);
  return view;
}

function scrollDown() {
  const nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 120;
  if (nearBottom) messages.scrollTop = messages.scrollHeight;
}

async function finishTurn(view, mine) {
  try {
    const turn = await api(`/api/runs/${view.runId}/turn`);
    if (mine !== generation) return;
    view.finish(turn);
    scrollDown();
  } catch {
    // The streamed text stays: only its markdown rendering is missing.
  }
  conversations.refresh();
}

function onEvent(event, mine) {
  if (mine !== generation) return;
  if (event.seq === undefined) {
    // A reply to a message of ours that was refused: nothing started, the text stays in the box.
    if (event.type === "error") {
      pending = null;
      say(event.code === "conversation_busy" ? BUSY : event.message, "error");
      updateButtons();
    }
    return;
  }
  let view = turns.get(event.run_id);
  if (!view) {
    const ours = pending !== null && ["run_started", "run_queued"].includes(event.type);
    view = addTurn(new TurnView({ runId: event.run_id, input: ours ? pending : "" }));
    view.sentHere = ours;
    if (ours) {
      pending = null;
      box.value = "";
      say("");
      conversations.refresh(); // a new conversation has its title now
    } else {
      api(`/api/runs/${event.run_id}/turn`).then((turn) => view.setInput(turn.input), () => {});
    }
  }
  if (view.apply(event) && view.ended) {
    // A message that failed (the model refused, the server stopped) comes back to the box to retry.
    if (event.type === "error" && view.sentHere && !box.value) box.value = view.user.textContent;
    finishTurn(view, mine);
  }
  updateButtons();
  scrollDown();
}

function connect() {
  const mine = generation;
  socket = new LiveSocket(`/ws/conversations/${conversation.id}/`, {
    onEvent: (event) => onEvent(event, mine),
    // Back after a cut: every unfinished turn continues after the last event it shows.
    onOpen: () => {
      for (const view of turns.values()) {
        if (view.ended) continue;
        socket.send({ type: "resume", run_id: view.runId, last_event_id: view.lastSeq });
        if (view.cancelWanted) socket.send({ type: "cancel", run_id: view.runId });
      }
    },
    onNotice: (text, kind) => mine === generation && say(text, kind),
  });
}

async function open(next, { push = true } = {}) {
  generation += 1;
  const mine = generation;
  socket?.close();
  socket = null;
  turns = new Map();
  pending = null;
  conversation = next;
  messages.replaceChildren();
  say("");
  $("conv-title").textContent = next ? next.title || "New conversation" : "New conversation";
  agentSelect.disabled = Boolean(next);
  if (next) agentSelect.value = next.agent;
  showAgent();
  conversations.select(next?.id);
  if (push) history.pushState({}, "", next ? `/c/${next.id}/` : "/");
  if (!next) {
    messages.append(el("p", { class: "empty", id: "empty" }, "Ask anything. The answer streams in as it is written; Stop ends it."));
    updateButtons();
    return;
  }
  try {
    const page = await api(`/api/conversations/${next.id}/turns?limit=50`);
    if (mine !== generation) return;
    for (const turn of page.results) {
      const view = addTurn(new TurnView({ runId: turn.run_id, input: turn.input, status: turn.status }));
      if (view.ended) view.finish(turn);
    }
  } catch (error) {
    say(error.message, "error");
  }
  if (mine !== generation) return;
  if (!turns.size) messages.append(el("p", { class: "empty", id: "empty" }, "No messages yet."));
  messages.scrollTop = messages.scrollHeight;
  connect();
  updateButtons();
}

async function send() {
  const text = box.value.trim();
  if (!text || pending !== null) return;
  if (activeTurn()) return say(BUSY, "error");
  if (!conversation) {
    try {
      const created = await api("/api/conversations/", { method: "POST", body: { agent: agentSelect.value } });
      await open(created);
      conversations.refresh();
    } catch (error) {
      return say(error.message, "error");
    }
  }
  if (socket && !socket.open) await socket.waitOpen(3000);
  if (!socket?.send({ type: "run", input: text })) {
    return say("Not connected: your message is kept. It can be sent once the connection is back.", "error");
  }
  pending = text;
  updateButtons();
}

const conversations = new ConversationList({
  list: $("conv-list"),
  empty: $("conv-empty"),
  search: $("conv-search"),
  onOpen: (item) => {
    $("app").classList.remove("show-sidebar");
    open(item);
  },
  onRenamed: (item) => {
    if (conversation?.id === item.id) {
      conversation.title = item.title;
      $("conv-title").textContent = item.title || "New conversation";
    }
  },
  onDeleted: (id) => {
    if (conversation?.id === id) open(null);
  },
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => {
  const view = activeTurn();
  if (!view) return;
  view.cancelWanted = true; // sent again when the socket reopens, so a Stop while away is not lost
  if (!socket?.send({ type: "cancel", run_id: view.runId })) {
    say("Not connected: Stop is sent once the connection is back.", "error");
  }
});
$("new-chat").addEventListener("click", () => {
  $("app").classList.remove("show-sidebar");
  open(null);
  box.focus();
});
$("toggle-sidebar").addEventListener("click", () => {
  const shown = $("app").classList.toggle("show-sidebar");
  $("toggle-sidebar").setAttribute("aria-expanded", String(shown));
});
agentSelect.addEventListener("change", showAgent);
window.addEventListener("popstate", () => location.reload());

conversations.refresh();
open(conversation, { push: false });
