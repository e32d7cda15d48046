// The side list of the user's conversations: newest first, search by title, rename, delete.
import { el } from "./dom.js";
import { api } from "./http.js";

export class ConversationList {
  constructor({ list, empty, search, onOpen, onRenamed, onDeleted }) {
    Object.assign(this, { list, empty, search, onOpen, onRenamed, onDeleted });
    this.current = null;
    this.items = [];
    let timer;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), 250);
    });
  }

  async refresh() {
    const query = this.search.value.trim();
    const params = new URLSearchParams({ limit: "100" });
    if (query) params.set("search", query);
    try {
      this.items = (await api(`/api/conversations/?${params}`)).results;
    } catch {
      return; // the list stays as it was; the next refresh tries again
    }
    this.empty.textContent = query ? "No conversation has that in its title." : "No conversations yet.";
    this.empty.classList.toggle("hidden", this.items.length > 0);
    this.list.replaceChildren(...this.items.map((item) => this.row(item)));
    const current = this.items.find((item) => item.id === this.current);
    if (current) this.onRenamed(current);
  }

  select(id) {
    this.current = id || null;
    for (const li of this.list.children) li.classList.toggle("current", li.dataset.id === this.current);
    for (const link of this.list.querySelectorAll("a")) {
      if (link.closest("li").dataset.id === this.current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  row(item) {
    const li = el("li", { "data-id": item.id, class: item.id === this.current ? "current" : "" });
    const link = el("a", { href: `/c/${item.id}/`, title: item.title, "aria-current": item.id === this.current ? "page" : null },
      item.title || "New conversation", " ", el("span", { class: "agent-tag" }, item.agent));
    link.addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      this.onOpen(item);
    });
    const rename = el("button", { type: "button", class: "button subtle", "aria-label": `Rename ${item.title || "conversation"}` }, "Rename");
    const remove = el("button", { type: "button", class: "button subtle danger", "aria-label": `Delete ${item.title || "conversation"}` }, "Delete");
    rename.addEventListener("click", () => this.editTitle(li, item));
    remove.addEventListener("click", () => this.confirmDelete(li, item));
    li.append(el("div", { class: "conv-row" }, link, rename, remove));
    return li;
  }

  editTitle(li, item) {
    const input = el("input", { type: "text", value: item.title, maxlength: "200", "aria-label": "New title" });
    const save = el("button", { type: "submit", class: "button primary" }, "Save");
    const cancel = el("button", { type: "button", class: "button" }, "Cancel");
    const error = el("p", { class: "small", role: "alert" });
    const form = el("form", { class: "conv-edit" }, input, save, cancel, error);
    const restore = () => li.replaceWith(this.row(item));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const updated = await api(`/api/conversations/${item.id}/`, { method: "PATCH", body: { title: input.value.trim() } });
        Object.assign(item, updated);
        this.onRenamed(item);
        restore();
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
    cancel.addEventListener("click", restore);
    input.addEventListener("keydown", (event) => event.key === "Escape" && restore());
    li.replaceChildren(form);
    input.focus();
    input.select();
  }

  confirmDelete(li, item) {
    const yes = el("button", { type: "button", class: "button danger" }, "Delete");
    const no = el("button", { type: "button", class: "button" }, "Cancel");
    const error = el("p", { class: "small", role: "alert" });
    const restore = () => li.replaceWith(this.row(item));
    yes.addEventListener("click", async () => {
      try {
        await api(`/api/conversations/${item.id}/`, { method: "DELETE" });
        li.remove();
        this.onDeleted(item.id);
        this.refresh();
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
    no.addEventListener("click", restore);
    li.replaceChildren(el("div", { class: "conv-edit" }, el("span", {}, `Delete “${item.title || "this conversation"}”?`), yes, no, error));
    no.focus();
  }
}
