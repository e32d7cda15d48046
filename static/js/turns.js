// One turn of a conversation on the page: the user's message, the steps (tool calls, handoffs),
// the answer. Live events append text as it streams; a finished turn shows the server's rendering
// of the answer (markdown, sanitized on the server).
import { addCopyButtons, el } from "./dom.js";

const TEXT_DELTAS = new Set(["response.output_text.delta", "response.refusal.delta"]);
const ERROR_TEXT = {
  model_rate_limited: "The model's provider refused for rate or quota; try again later.",
  model_auth_failed: "The model's provider refused the server's API key.",
  model_unavailable: "The model could not be reached or stopped mid-answer.",
  interrupted: "The server stopped before the answer was finished.",
};

export const isActive = (status) => ["running", "queued", "awaiting_approval"].includes(status);

export function usageText(usage) {
  if (!usage || !usage.total_tokens) return "";
  const requests = usage.requests === 1 ? "1 request" : `${usage.requests} requests`;
  return `${usage.total_tokens} tokens (${usage.input_tokens} in, ${usage.output_tokens} out) · ${requests}`;
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return String(text ?? "");
  }
}

export class TurnView {
  constructor({ runId, input, status = "running" }) {
    this.runId = runId;
    this.lastSeq = 0;
    this.ended = !isActive(status);
    this.calls = new Map();
    this.texts = new Map();
    this.approvals = new Map(); // approval id -> its card
    this.onDecide = null; // (runId, approvalId, decision, reason) => sends it; set by the page
    this.user = el("div", { class: "user-msg" }, input || "");
    this.agent = el("div", { class: "agent-name" });
    this.body = el("div", { class: "turn-body" });
    this.meta = el("div", { class: "turn-meta" });
    this.root = el("article", { class: "turn", "data-run-id": runId }, this.user, this.agent, this.body, this.meta);
    if (!input) this.user.classList.add("hidden");
  }

  setInput(text) {
    this.user.textContent = text;
    this.user.classList.toggle("hidden", !text);
  }

  // A live event; events at or before the last one shown are skipped (replays after a reconnect).
  apply(event) {
    if (event.seq !== undefined) {
      if (event.seq <= this.lastSeq) return false;
      this.lastSeq = event.seq;
    }
    switch (event.type) {
      case "run_queued":
        this.meta.textContent = event.waiting_for ? "Waiting for the answer before it…" : "Waiting to start…";
        break;
      case "turn_restarted":
        this.restart(event);
        break;
      case "run_started":
        this.meta.textContent = "";
        this.agent.textContent = event.agent;
        break;
      case "agent_updated":
        this.agent.textContent = event.agent_name;
        break;
      case "raw_response":
        if (TEXT_DELTAS.has(event.event_type)) this.appendText(event.item_id, event.delta, event.seq);
        break;
      case "run_item":
        this.addStep(event);
        break;
      case "approval_required":
        this.meta.textContent = "Waiting for a decision on the tool call below.";
        for (const call of event.approvals) this.addApproval(call);
        break;
      case "approval_decided":
        this.decided(event);
        break;
      case "stream_complete":
        this.end(event.status, event.usage);
        break;
      case "error":
        this.end("failed", null, event.message, event.code);
        break;
    }
    return true;
  }

  appendText(itemId, delta, seq) {
    let node = this.texts.get(itemId);
    if (!node) {
      node = el("div", { class: "answer live", "data-seq": String(seq ?? 0) });
      this.texts.set(itemId, node);
      this.body.append(node);
    }
    node.append(delta);
  }

  // The server took the run over from a worker that stopped: what came after `after_seq` (the
  // cut turn's text and steps) goes, and that turn streams again.
  restart(event) {
    for (const node of [...this.body.children]) {
      if (Number(node.dataset.seq || 0) > event.after_seq) node.remove();
    }
    for (const nodes of [this.texts, this.calls]) {
      for (const [key, node] of nodes) if (!node.isConnected) nodes.delete(key);
    }
    this.meta.textContent = `Interrupted (${event.reason}): the answer goes on from where it was.`;
  }

  addStep(event) {
    const seq = String(event.seq ?? 0);
    const step = (summary, ...rest) => el("details", { class: "step", "data-seq": seq }, el("summary", {}, summary), ...rest);
    const block = (label, text) => [el("div", { class: "step-label" }, label), el("pre", {}, text)];
    switch (event.name) {
      case "tool_called": {
        const node = step(`Tool call: ${event.tool_name}`, ...block("Arguments", pretty(event.tool_arguments)));
        this.calls.set(event.call_id, node);
        this.body.append(node);
        break;
      }
      case "tool_output": {
        const node = this.calls.get(event.call_id);
        const output = block("Output", pretty(event.output));
        if (node) node.append(...output);
        else this.body.append(step(`Tool output: ${event.tool_name || ""}`, ...output));
        break;
      }
      case "handoff_requested":
        this.body.append(step(`Handoff requested: ${event.tool_name}`, ...block("Arguments", pretty(event.tool_arguments))));
        break;
      case "handoff_occured":
        this.body.append(step(`Handoff: ${event.source_agent} → ${event.target_agent}`, el("p", { class: "step-label" }, `${event.target_agent} answers from here.`)));
        break;
      case "reasoning_item_created":
        this.body.append(step("Reasoning", el("pre", {}, event.content || "")));
        break;
      case "approval_required": // a finished turn's (the server's transcript)
        for (const call of event.approvals) this.addApproval(call);
        break;
      case "approval_decided":
        this.decided(event);
        break;
    }
  }

  // A tool call that waits for a person: what it would do, and Approve / Reject (with a reason).
  addApproval(call) {
    const reason = el("input", { type: "text", class: "approval-reason", placeholder: "Reason (optional)", maxlength: "2000", "aria-label": "Reason" });
    const decide = (decision) => this.onDecide?.(this.runId, call.approval_id, decision, reason.value.trim());
    const actions = el(
      "div",
      { class: "approval-actions" },
      el("button", { type: "button", class: "button primary approve", onclick: () => decide("approve") }, "Approve"),
      el("button", { type: "button", class: "button danger reject", onclick: () => decide("reject") }, "Reject"),
      reason,
    );
    const card = el(
      "div",
      { class: "approval", "data-approval-id": call.approval_id },
      el("div", { class: "approval-title" }, `${call.agent_name} wants to run ${call.tool_name}`),
      el("pre", {}, pretty(JSON.stringify(call.arguments))),
      actions,
    );
    this.approvals.set(call.approval_id, card);
    this.body.append(card);
  }

  decided(event) {
    const card = this.approvals.get(event.approval_id);
    if (!card) return;
    const who = event.decided_by ? ` by ${event.decided_by}` : "";
    const why = event.reason ? `: ${event.reason}` : "";
    const verdict = event.decision === "approved" ? `Approved${who}.` : `Rejected${who}${why}.`;
    card.classList.add(event.decision);
    card.querySelector(".approval-actions").replaceWith(el("div", { class: "approval-verdict" }, verdict));
    if (event.pending === 0) this.meta.textContent = "";
  }

  end(status, usage, message, code) {
    this.ended = true;
    const parts = [];
    if (status === "cancelled") parts.push("Stopped.");
    if (usage) parts.push(usageText(usage));
    // A run the server stopped (`interrupted`: live it is an `error` event) failed as far as the
    // reader is concerned; its text so far stays, marked as cut off, like a stopped one's.
    const failed = status === "failed" || status === "interrupted";
    if (failed) parts.push(`Error: ${ERROR_TEXT[code] || message || "the run failed."}`);
    this.meta.textContent = parts.filter(Boolean).join(" ");
    this.meta.classList.toggle("error", failed);
    this.root.classList.toggle("cut", failed || status === "cancelled");
  }

  // The finished turn as the server stores it: steps, the answer as sanitized HTML, usage, status.
  finish(turn) {
    this.setInput(turn.input);
    this.body.replaceChildren();
    this.calls.clear();
    this.texts.clear();
    this.approvals.clear();
    for (const step of turn.steps) this.addStep(step);
    if (turn.html) {
      const answer = el("div", { class: "answer rendered" });
      answer.innerHTML = turn.html; // rendered from markdown and sanitized (nh3) by the server
      addCopyButtons(answer);
      this.body.append(answer);
    }
    this.lastSeq = Math.max(this.lastSeq, turn.last_seq || 0);
    if (!isActive(turn.status)) {
      this.end(turn.status, turn.usage, turn.error, turn.error_code);
    }
  }
}
