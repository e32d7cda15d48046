// A stored run played back through the chat page's renderer, at its recorded pace (gaps capped).
import { readConfig } from "./dom.js";
import { TurnView, isActive } from "./turns.js";

const { turn, events } = readConfig("replay-config");
const messages = document.getElementById("messages");
const state = document.getElementById("replay-state");
const play = document.getElementById("play");
const MAX_GAP = 0.5; // seconds: longer pauses of the original run are shortened

let playing = 0;

function show(finished) {
  const view = new TurnView({ runId: turn.run_id, input: turn.input });
  messages.replaceChildren(view.root);
  if (finished) view.finish(turn);
  return view;
}

async function replay() {
  const mine = ++playing;
  const view = show(false);
  state.textContent = "Replaying…";
  for (let i = 0; i < events.length; i++) {
    const gap = i ? Math.min(events[i].at - events[i - 1].at, MAX_GAP) : 0;
    if (gap > 0.005) await new Promise((resolve) => setTimeout(resolve, gap * 1000));
    if (mine !== playing) return;
    view.apply(events[i]);
  }
  if (!isActive(turn.status)) view.finish(turn);
  state.textContent = `${events.length} events replayed.`;
}

play.addEventListener("click", replay);
show(!isActive(turn.status));
state.textContent = `${events.length} events. Replay plays them as they streamed.`;
