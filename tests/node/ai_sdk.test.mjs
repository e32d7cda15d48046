// The `ai` package (the Vercel AI SDK) reading our UI message stream, as `useChat` does:
// its schema validates every chunk, readUIMessageStream and the Chat class assemble the message,
// and a cut stream is resumed. Run by tests/test_ai_sdk.py against a live server.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AbstractChat,
  DefaultChatTransport,
  getToolName,
  isToolUIPart,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from "ai";

const { BASE_URL, TOKEN } = process.env;
const AUTH = { Authorization: `Token ${TOKEN}` };
const api = (slug = "chat") => `${BASE_URL}/api/agents/${slug}/ui`;
let chats = 0;
const newChatId = () => `node-${process.pid}-${++chats}`;

/** The smallest ChatState: what a UI framework binding keeps (React's useChat keeps the same). */
class ArrayState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => this.messages.push(message);
  popMessage = () => this.messages.pop();
  replaceMessage = (index, message) => (this.messages[index] = message);
  snapshot = (thing) => structuredClone(thing);
}

class TestChat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new ArrayState() });
  }
}

const transport = (slug) => new DefaultChatTransport({ api: api(slug), headers: AUTH });

function userMessage(text) {
  return { id: `u-${Math.random()}`, role: "user", parts: [{ type: "text", text }] };
}

const textOf = (message) =>
  message.parts
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");

async function finishedRun(runId) {
  const response = await fetch(`${BASE_URL}/api/runs/${runId}/`, { headers: AUTH });
  assert.equal(response.status, 200);
  return response.json();
}

/** Every chunk of a response, each checked against the package's own chunk schema. */
async function validatedChunks(body) {
  const chunks = [];
  const reader = parseJsonEventStream({ stream: body, schema: uiMessageChunkSchema }).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    assert.ok(value.success, `chunk fails the ai package's schema: ${JSON.stringify(value.rawValue)}`);
    chunks.push(value.value);
  }
}

async function lastMessage(chunks) {
  let message;
  const stream = new ReadableStream({
    start(controller) {
      chunks.forEach((chunk) => controller.enqueue(chunk));
      controller.close();
    },
  });
  for await (const snapshot of readUIMessageStream({ stream, terminateOnError: true })) {
    message = snapshot;
  }
  return message;
}

test("every chunk validates and readUIMessageStream assembles the run's answer and tool call", async () => {
  const response = await fetch(api(), {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/json" },
    body: JSON.stringify({ id: newChatId(), messages: [userMessage("what is 17 * 23?")], trigger: "submit-message" }),
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("x-vercel-ai-ui-message-stream"), "v1");
  const chunks = await validatedChunks(response.body);
  assert.equal(chunks.at(0).type, "start");
  assert.equal(chunks.at(-1).type, "finish");

  const message = await lastMessage(chunks);
  const run = await finishedRun(message.metadata.run_id);
  assert.equal(run.status, "completed");
  assert.equal(message.id, run.id);
  assert.equal(textOf(message), run.final_output);
  assert.match(run.final_output, /391/);
  assert.equal(message.metadata.usage.total_tokens, run.usage.total_tokens);

  const tools = message.parts.filter(isToolUIPart);
  assert.equal(tools.length, 1);
  assert.equal(getToolName(tools[0]), "calculate");
  assert.equal(tools[0].type, "tool-calculate");
  assert.equal(tools[0].state, "output-available");
  assert.deepEqual(tools[0].input, { expression: "17 * 23" });
  assert.equal(tools[0].output, "391");
  assert.equal(message.parts.filter((part) => part.type === "step-start").length, 2);
});

test("the Chat class sends, the chat id keeps the conversation, finish carries the metadata", async () => {
  let finished;
  const chat = new TestChat({ id: newChatId(), transport: transport(), onFinish: (event) => (finished = event) });
  await chat.sendMessage({ text: "My name is Ada" });
  assert.equal(chat.status, "ready");
  assert.equal(chat.messages.length, 2);
  const first = chat.messages[1];
  assert.equal(first.role, "assistant");
  assert.equal(finished.finishReason, "stop");
  assert.equal(finished.isError, false);
  assert.equal(textOf(first), (await finishedRun(first.metadata.run_id)).final_output);
  assert.equal(first.metadata.status, "completed");

  // The whole history is sent again; the server answers from the conversation's own memory.
  await chat.sendMessage({ text: "What is my name?" });
  const second = chat.messages[3];
  assert.equal(second.metadata.conversation_id, first.metadata.conversation_id);
  assert.notEqual(second.metadata.run_id, first.metadata.run_id);
  assert.match(textOf(second), /Ada/);
});

test("a stream cut mid-answer is resumed whole, by the Chat class and by readUIMessageStream", async () => {
  const chatId = newChatId();
  const controller = new AbortController();
  const response = await fetch(api(), {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/json" },
    body: JSON.stringify({ id: chatId, messages: [userMessage("Tell me a long story about forests")] }),
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  const reader = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }).getReader();
  let deltas = 0;
  while (deltas < 2) {
    const { done, value } = await reader.read();
    assert.ok(!done, "the stream ended before its second text delta");
    if (value.value.type === "text-delta") deltas += 1;
  }
  controller.abort(); // the connection drops; the run goes on

  // The Chat class resumes: the whole message comes again, from its first chunk.
  const chat = new TestChat({ id: chatId, transport: transport() });
  const replay = fetch(`${api()}/${chatId}/stream`, { headers: AUTH });
  await chat.resumeStream();
  assert.equal(chat.status, "ready");
  assert.equal(chat.messages.length, 1);
  const message = chat.messages[0];
  const run = await finishedRun(message.metadata.run_id);
  assert.equal(run.status, "completed");
  assert.equal(message.id, run.id);
  assert.equal(textOf(message), run.final_output);
  assert.ok(run.final_output.length > 40);

  // The same resume request, read with readUIMessageStream, when it was made before the end.
  const early = await replay;
  if (early.status === 200) {
    const replayed = await lastMessage(await validatedChunks(early.body));
    assert.equal(textOf(replayed), run.final_output);
  } else {
    assert.equal(early.status, 204); // the run had already ended
  }

  // Once the run has ended there is nothing to resume: 204, which the transport reads as "none".
  const after = await transport().reconnectToStream({ chatId });
  assert.equal(after, null);
});

test("refusals reach the client as the protocol's error chunk", async () => {
  const chat = new TestChat({ id: newChatId(), transport: transport("no-such-agent") });
  await chat.sendMessage({ text: "hello" });
  assert.equal(chat.status, "error");
  const body = JSON.parse(chat.error.message);
  assert.equal(body.type, "error");
  assert.equal(body.code, "not_found");

  // A chat never used has nothing to resume: the Chat class's resume on mount stays ready.
  const unknown = await fetch(`${api()}/never-used/stream`, { headers: AUTH });
  assert.equal(unknown.status, 204);
  const fresh = new TestChat({ id: newChatId(), transport: transport("chat") });
  await fresh.resumeStream();
  assert.equal(fresh.status, "ready");
});

/** Resolves once `predicate()` holds (the Chat class sends an automatic request unawaited). */
async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function pausedRefund(chatId) {
  const chat = new TestChat({
    id: chatId,
    transport: transport("ops"),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  });
  await chat.sendMessage({ text: "refund order A17 250" });
  assert.equal(chat.status, "ready");
  const message = chat.messages.at(-1);
  assert.equal(message.metadata.status, "awaiting_approval");
  const [call] = message.parts.filter(isToolUIPart);
  assert.equal(getToolName(call), "refund_order");
  assert.equal(call.state, "approval-requested");
  assert.deepEqual(call.input, { order_id: "A17", amount: 250 });
  return { chat, message, call };
}

const approvalsOf = async (runId) =>
  (await (await fetch(`${BASE_URL}/api/runs/${runId}/approvals/`, { headers: AUTH })).json()).approvals;

test("a call that needs approval: the request part, addToolApprovalResponse resumes the same run", async () => {
  const { chat, message, call } = await pausedRefund(newChatId());
  const [pending] = await approvalsOf(message.id);
  assert.equal(call.approval.id, pending.approval_id);
  assert.equal(pending.status, "pending");

  await chat.addToolApprovalResponse({ id: call.approval.id, approved: true });
  await until(() => chat.status === "ready" && chat.messages.at(-1).metadata.status === "completed", "the answer");
  assert.equal(chat.messages.length, 2); // the same assistant message went on
  const answer = chat.messages.at(-1);
  assert.equal(answer.id, message.id);
  const [done] = answer.parts.filter(isToolUIPart);
  assert.equal(done.state, "output-available");
  assert.match(done.output, /refunded 250.00 on order A17/);
  const run = await finishedRun(answer.id);
  assert.equal(run.status, "completed");
  assert.equal(textOf(answer), run.final_output);
  const [decided] = await approvalsOf(answer.id);
  assert.deepEqual([decided.status, decided.surface], ["approved", "ai_sdk"]);
});

test("a rejected call is denied: its tool never runs and the answer says why", async () => {
  const { chat, message, call } = await pausedRefund(newChatId());
  await chat.addToolApprovalResponse({ id: call.approval.id, approved: false, reason: "too large" });
  await until(() => chat.status === "ready" && chat.messages.at(-1).metadata.status === "completed", "the answer");
  const answer = chat.messages.at(-1);
  assert.equal(answer.id, message.id);
  const [denied] = answer.parts.filter(isToolUIPart);
  assert.equal(denied.state, "output-denied");
  assert.match(textOf(answer), /did not make the refund.*too large/);
  const [decided] = await approvalsOf(answer.id);
  assert.deepEqual([decided.status, decided.reason], ["rejected", "too large"]);

  // The same answers again (a retried request): not decided twice; a different one: 409.
  const again = await fetch(api("ops"), {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/json" },
    body: JSON.stringify({ id: chat.id, messages: [{ ...answer, parts: [{ ...denied, state: "approval-responded", approval: { id: call.approval.id, approved: true } }] }] }),
  });
  assert.equal(again.status, 409);
  assert.equal((await again.json()).code, "approval_decided");
});

test("a paused run is resumed on mount with its approval request", async () => {
  const chatId = newChatId();
  const { message } = await pausedRefund(chatId);
  const mounted = new TestChat({
    id: chatId,
    transport: transport("ops"),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  });
  await mounted.resumeStream();
  assert.equal(mounted.status, "ready");
  const [call] = mounted.messages.at(-1).parts.filter(isToolUIPart);
  assert.equal(mounted.messages.at(-1).id, message.id);
  assert.equal(call.state, "approval-requested");
  await mounted.addToolApprovalResponse({ id: call.approval.id, approved: true });
  await until(() => mounted.status === "ready" && mounted.messages.at(-1).metadata.status === "completed", "the answer");
  assert.equal((await finishedRun(message.id)).status, "completed");
});
