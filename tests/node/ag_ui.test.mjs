// @ag-ui/client's HttpAgent against the live server's AG-UI endpoint (run by tests/test_ag_ui.py).
// Every stream passes the client's own checks (verifyEvents runs inside runAgent).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { HttpAgent, buildResumeArray, verifyEvents } from "@ag-ui/client";
import { from, lastValueFrom, toArray } from "rxjs";

const { BASE_URL, TOKEN, SYNTHETIC_EVENTS } = process.env;
const headers = { Authorization: `Token ${TOKEN}` };

function agentFor(slug, threadId) {
  return new HttpAgent({ url: `${BASE_URL}/api/agents/${slug}/ag-ui`, headers, threadId });
}

/** Runs the agent on a new user message; returns the run's result and every event it got. */
async function ask(agent, text, params = {}, subscriber = {}) {
  agent.addMessage({ id: `u-${agent.messages.length}`, role: "user", content: text });
  const events = [];
  const { result, newMessages } = await agent.runAgent(params, {
    ...subscriber,
    onEvent: ({ event }) => {
      events.push(event);
    },
  });
  return { result, newMessages, events };
}

/** Event types, with runs of the same content event as one. */
function shape(events) {
  const out = [];
  for (const { type } of events) {
    if (!(out.at(-1) === type && /_(CONTENT|ARGS)$/.test(type))) out.push(type);
  }
  return out;
}

const textOf = (events) =>
  events.filter((e) => e.type === "TEXT_MESSAGE_CONTENT").map((e) => e.delta).join("");

test("chat calls its calculate tool, and the thread goes on", async () => {
  const agent = agentFor("chat", "node-chat");
  const { result, events } = await ask(agent, "what is 17 * 23?", { runId: "node-run-1" });
  assert.deepEqual(shape(events), [
    "RUN_STARTED",
    "STEP_STARTED",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_RESULT",
    "TEXT_MESSAGE_START",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_END",
    "STEP_FINISHED",
    "RUN_FINISHED",
  ]);
  const [started, finished] = [events[0], events.at(-1)];
  assert.equal(started.threadId, "node-chat");
  assert.equal(started.runId, "node-run-1");
  assert.match(started.metadata.runId, /^[0-9a-f-]{36}$/);
  assert.equal(finished.runId, "node-run-1");
  assert.equal(result, "17 * 23 = 391.");
  assert.equal(textOf(events), "17 * 23 = 391.");
  assert.ok(finished.usage[0].totalTokens > 0);

  // The agent's own message list, as HttpAgent built it from the events.
  const call = agent.messages.flatMap((m) => m.toolCalls ?? [])[0];
  assert.equal(call.function.name, "calculate");
  assert.deepEqual(JSON.parse(call.function.arguments), { expression: "17 * 23" });
  const toolMessage = agent.messages.find((m) => m.role === "tool");
  assert.equal(toolMessage.toolCallId, call.id);
  assert.equal(toolMessage.content, "391");
  assert.equal(agent.messages.at(-1).role, "assistant");
  assert.equal(agent.messages.at(-1).content, "17 * 23 = 391.");

  // HttpAgent sends the whole history again; the server answers the new message only.
  const next = await ask(agent, "and 2 + 2?");
  assert.equal(next.result, "2 + 2 = 4.");
  assert.notEqual(next.events[0].metadata.runId, started.metadata.runId);
  assert.equal(next.events[0].metadata.conversationId, started.metadata.conversationId);
});

test("assistant hands a math question to its specialist", async () => {
  const agent = agentFor("assistant", "node-assistant");
  const { result, events } = await ask(agent, "what is 12 + 30?");
  const steps = events.filter((e) => e.type.startsWith("STEP_")).map((e) => `${e.type} ${e.stepName}`);
  assert.deepEqual(steps, [
    "STEP_STARTED Assistant",
    "STEP_FINISHED Assistant",
    "STEP_STARTED Math Specialist",
    "STEP_FINISHED Math Specialist",
  ]);
  const calls = events.filter((e) => e.type === "TOOL_CALL_START").map((e) => e.toolCallName);
  assert.deepEqual(calls, ["calculate"]);
  assert.equal(result, "12 + 30 = 42.");
  assert.equal(events.at(-1).type, "RUN_FINISHED");
});

test("a run cancelled through the REST API finishes with the cancelled outcome", async () => {
  const agent = agentFor("chat", "node-cancel");
  let ourRunId, cancelled;
  const { result, events } = await ask(
    agent,
    "Tell me a long story about rivers",
    {},
    {
      // RUN_STARTED's metadata names this server's run: the one to cancel.
      onRunStartedEvent: ({ event }) => {
        ourRunId = event.metadata.runId;
      },
      onTextMessageContentEvent: () => {
        cancelled ??= fetch(`${BASE_URL}/api/runs/${ourRunId}/cancel`, { method: "POST", headers });
      },
    },
  );
  assert.equal((await cancelled).status, 202);
  const finished = events.at(-1);
  assert.equal(finished.type, "RUN_FINISHED");
  assert.deepEqual(finished.outcome, { type: "cancelled" });
  assert.equal(result, undefined);
  assert.deepEqual(shape(events).slice(-3), ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]);
});

test("refusals reach the client as HTTP errors with a RUN_ERROR body", async () => {
  const agent = agentFor("chat", "node-refused");
  agent.addMessage({ id: "u1", role: "user", content: "hi" });
  const tools = [{ name: "browser_tool", description: "runs in the browser", parameters: {} }];
  await assert.rejects(agent.runAgent({ tools }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(err.payload.type, "RUN_ERROR");
    assert.ok(err.payload.metadata.fields.tools);
    return true;
  });
  const unknown = agentFor("nope", "node-refused");
  unknown.addMessage({ id: "u1", role: "user", content: "hi" });
  await assert.rejects(unknown.runAgent({}), (err) => err.status === 404 && err.payload.code === "not_found");
});

test("the translation of errors, queued runs and reasoning passes verifyEvents", async () => {
  const sequences = JSON.parse(readFileSync(SYNTHETIC_EVENTS, "utf8"));
  assert.ok(Object.keys(sequences).length >= 2);
  for (const [name, events] of Object.entries(sequences)) {
    const verified = await lastValueFrom(from(events).pipe(verifyEvents(), toArray()));
    assert.equal(verified.length, events.length, name);
  }
});

/** Runs the agent again with answers to its pending interrupts (no new message). */
async function resume(agent, responses) {
  const events = [];
  const resumeEntries = buildResumeArray(agent.pendingInterrupts, responses);
  const { result } = await agent.runAgent({ resume: resumeEntries }, { onEvent: ({ event }) => events.push(event) });
  return { result, events };
}

const approvalOf = async (approvalId, runId) => {
  const response = await fetch(`${BASE_URL}/api/runs/${runId}/approvals/`, { headers });
  return (await response.json()).approvals.find((a) => a.approval_id === approvalId);
};

test("a call that needs approval ends the run with an interrupt; resume answers it", async () => {
  const agent = agentFor("ops", "node-ops-approve");
  const paused = await ask(agent, "refund order A17 250");
  const finished = paused.events.at(-1);
  assert.equal(finished.type, "RUN_FINISHED");
  assert.equal(finished.outcome.type, "interrupt");
  const [interrupt] = finished.outcome.interrupts;
  assert.deepEqual(agent.pendingInterrupts, finished.outcome.interrupts);
  assert.equal(interrupt.reason, "tool_approval");
  assert.equal(interrupt.metadata.toolName, "refund_order");
  assert.deepEqual(interrupt.metadata.arguments, { order_id: "A17", amount: 250 });
  const call = agent.messages.flatMap((m) => m.toolCalls ?? [])[0];
  assert.equal(interrupt.toolCallId, call.id);
  const runId = paused.events[0].metadata.runId;
  assert.equal(interrupt.metadata.runId, runId);
  assert.equal((await approvalOf(interrupt.id, runId)).status, "pending");

  // A new message with the interrupt unanswered: the client itself refuses it.
  await assert.rejects(ask(agent, "hello"), /pending interrupt/);
  agent.messages.pop();

  const resumed = await resume(agent, { [interrupt.id]: { status: "resolved", payload: { approved: true } } });
  assert.equal(resumed.events[0].type, "RUN_STARTED");
  assert.equal(resumed.events[0].metadata.runId, runId); // the same run of ours goes on
  assert.equal(resumed.events.at(-1).outcome?.type ?? "success", "success");
  assert.match(resumed.result, /refunded 250.00 on order A17/);
  assert.deepEqual(agent.pendingInterrupts, []);
  const toolMessage = agent.messages.find((m) => m.role === "tool");
  assert.equal(toolMessage.toolCallId, call.id);
  assert.equal(toolMessage.content, "refunded 250.00 on order A17");
  const decided = await approvalOf(interrupt.id, runId);
  assert.deepEqual([decided.status, decided.surface], ["approved", "ag_ui"]);
});

test("a rejected or cancelled interrupt: the tool never runs and the answer says so", async () => {
  for (const [answer, reason] of [
    [{ status: "resolved", payload: { approved: false, reason: "too large" } }, "too large"],
    [{ status: "cancelled" }, "cancelled"],
  ]) {
    const agent = agentFor("ops", `node-ops-${answer.status}`);
    const paused = await ask(agent, "refund order A17 250");
    const [interrupt] = agent.pendingInterrupts;
    const resumed = await resume(agent, { [interrupt.id]: answer });
    assert.match(resumed.result, new RegExp(`did not make the refund.*${reason}`));
    const decided = await approvalOf(interrupt.id, paused.events[0].metadata.runId);
    assert.deepEqual([decided.status, decided.reason], ["rejected", reason]);
  }
});
