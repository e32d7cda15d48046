// A WebSocket that comes back by itself: on a lost connection it reconnects with back-off
// (0.5 s doubling to 15 s, with jitter) until it is closed on purpose. `onNotice(text, kind)`
// tells the page what to show about the connection ("" once it is open).

const CLOSE_CODES = { 4401: "You are logged out. Log in again to continue.", 4404: "This conversation no longer exists." };

export class LiveSocket {
  constructor(path, { onEvent, onOpen, onNotice }) {
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onNotice = onNotice;
    this.delay = 500;
    this.closed = false;
    this.connect();
  }

  connect() {
    const ws = (this.ws = new WebSocket(this.url));
    ws.addEventListener("open", () => {
      this.delay = 500;
      this.onNotice("");
      this.onOpen();
    });
    ws.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    });
    ws.addEventListener("close", (close) => {
      if (this.closed || ws !== this.ws) return;
      if (CLOSE_CODES[close.code]) {
        this.closed = true;
        this.onNotice(CLOSE_CODES[close.code], "error");
        return;
      }
      const wait = Math.round(this.delay * (0.75 + Math.random() / 2));
      this.delay = Math.min(this.delay * 2, 15000);
      this.onNotice(`Connection lost. Reconnecting in ${(wait / 1000).toFixed(1)} s…`, "warn");
      this.timer = setTimeout(() => this.connect(), wait);
    });
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  // Resolves true once the socket is open, false after `ms` without it.
  waitOpen(ms = 5000) {
    if (this.open) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve(true);
      }, { once: true });
    });
  }

  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws.close();
  }
}
