// The chat page: the public OpenAI API (/v1/models, /v1/chat/completions with stream: true) and nothing else.
// Every text from the server (answer, titles, headings, URLs, passages, errors) goes in as text, never as HTML.
"use strict";

const KEY_STORAGE = "rag.apiKey";
const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
const $ = (id) => document.getElementById(id);
const page = {
  form: $("ask"), question: $("question"), send: $("send"), stop: $("stop"), newChat: $("new-chat"),
  conversation: $("conversation"), notice: $("notice"), model: $("model"), announce: $("announce"),
  keyRow: $("key-row"), key: $("api-key"), search: $("search"), topK: $("top-k"), urlPrefix: $("url-prefix"),
};
let history = []; // the finished turns, sent with each question: [{role, content}, ...]
let inFlight = null; // the AbortController of the request being answered
let modelId = null;
let turns = 0;
let chat = 0; // "New chat" starts another: an answer still arriving for the old one is not added to it

const api = (path) => new URL(`v1/${path}`, document.baseURI);

function headers() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** The URL as a link target only when it is http(s); anything else (javascript:, data:, a path) stays text. */
function httpUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** A readable message for an HTTP error: the OpenAI-shaped body's message, with what to do about it. */
async function errorMessage(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body?.error?.message ?? JSON.stringify(body);
  } catch {
    message = response.statusText;
  }
  if (response.status === 503) {
    const wait = response.headers.get("Retry-After");
    return `Busy, retry in ${wait ?? "a few"} s: ${message}`;
  }
  if (response.status === 401) return `This server needs an API key: enter it above and send again. (${message})`;
  return `Error ${response.status}: ${message}`;
}

function showNotice(text) {
  page.notice.textContent = text;
  page.notice.hidden = !text;
}

function askForKey(message) {
  page.keyRow.hidden = false;
  showNotice(message);
  page.key.focus();
}

async function loadModel() {
  let response;
  try {
    response = await fetch(api("models"), { headers: headers() });
  } catch (e) {
    return showNotice(`The server cannot be reached: ${e.message}`);
  }
  if (response.status === 401) return askForKey(await errorMessage(response));
  if (!response.ok) return showNotice(await errorMessage(response));
  modelId = (await response.json()).data[0].id;
  page.model.textContent = `model: ${modelId}`;
  page.keyRow.hidden = true; // the key works (or none is needed); a 401 shows the field again
  showNotice("");
}

/** The SSE events of a streamed chat completion, parsed; ends at [DONE] (setting ``stream.complete``) or when
 * the body ends, which without [DONE] means the answer was cut off. */
async function* events(response, stream) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = ""; // decoded text not yet split; a trailing \r waits for a \n that may follow
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      pending += decoder.decode(value, { stream: true });
      const ready = pending.endsWith("\r") ? pending.length - 1 : pending.length;
      buffer += pending.slice(0, ready).replace(/\r\n?/g, "\n"); // SSE lines may end in \r\n, \r or \n
      pending = pending.slice(ready);
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = buffer.slice(0, end).split("\n")
          .filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
        buffer = buffer.slice(end + 2);
        if (data === "[DONE]") {
          stream.complete = true;
          return;
        }
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a reader that stops early closes the stream, and the server stops too
  }
}

/** One question and its answer in the conversation, with the DOM nodes the stream fills. */
class Turn {
  constructor(question) {
    this.id = `turn-${++turns}`;
    this.text = "";
    this.sources = new Map();
    this.answer = el("div", { class: "answer", "aria-busy": "true" });
    this.sourceList = el("ol", { class: "sources", "aria-label": "Sources" });
    this.status = el("p", { class: "turn-status" });
    this.node = el("article", { class: "turn", id: this.id },
      el("p", { class: "question", text: question }), this.answer, this.status, this.sourceList);
    page.conversation.append(this.node);
  }

  sourceId(index) {
    return `${this.id}-source-${index}`;
  }

  /** The answer as text nodes, each [n] (or [n, m]) of a listed source a link to it. */
  renderAnswer() {
    const parts = [];
    let last = 0;
    for (const match of this.text.matchAll(CITATION)) {
      const numbers = match[1].split(",").map((n) => Number(n.trim()));
      if (!numbers.every((n) => this.sources.has(n))) continue;
      parts.push(this.text.slice(last, match.index));
      numbers.forEach((n, i) => {
        parts.push(el("a", {
          class: "citation", href: `#${this.sourceId(n)}`, text: `[${n}]`,
          onclick: (event) => { event.preventDefault(); this.openSource(n); },
        }));
        if (i < numbers.length - 1) parts.push(" ");
      });
      last = match.index + match[0].length;
    }
    parts.push(this.text.slice(last));
    this.answer.replaceChildren(...parts);
  }

  renderSources(sources) {
    for (const source of sources) {
      this.sources.set(source.index, source);
      const target = httpUrl(source.url);
      const title = source.title || source.url;
      const passageId = `${this.sourceId(source.index)}-passage`;
      const passage = el("blockquote", { class: "passage", id: passageId, text: source.text ?? "" });
      passage.hidden = true;
      const toggle = el("button", {
        type: "button", class: "show-passage", "aria-expanded": "false", "aria-controls": passageId,
        text: "Show passage", onclick: () => this.togglePassage(source.index),
      });
      this.sourceList.append(el("li", { id: this.sourceId(source.index) },
        el("span", { class: "source-number", text: `[${source.index}] ` }),
        target
          ? el("a", { class: "source-link", href: target, target: "_blank", rel: "noopener noreferrer", text: title })
          : el("span", { class: "source-title", text: title }),
        source.heading ? el("span", { class: "heading", text: ` › ${source.heading}` }) : "",
        // A PDF's page: its URL already ends in #page=N, so the link opens the viewer there.
        Number.isInteger(source.page) && source.page > 0
          ? (target
            ? el("a", { class: "page", href: target, target: "_blank", rel: "noopener noreferrer", text: ` p. ${source.page}` })
            : el("span", { class: "page", text: ` p. ${source.page}` }))
          : "",
        el("div", { class: "source-meta" },
          el("span", { class: "url", text: source.url }),
          el("span", { class: "score", text: ` score ${Number(source.score).toFixed(3)} ` }), toggle),
        passage));
    }
  }

  togglePassage(index, open) {
    const item = $(this.sourceId(index));
    const button = item.querySelector(".show-passage");
    const passage = item.querySelector(".passage");
    const show = open ?? passage.hidden;
    passage.hidden = !show;
    button.setAttribute("aria-expanded", String(show));
    button.textContent = show ? "Hide passage" : "Show passage";
  }

  openSource(index) {
    this.togglePassage(index, true);
    const item = $(this.sourceId(index));
    item.scrollIntoView({ block: "nearest" });
    item.querySelector(".show-passage").focus();
  }

  /** Streamed text is appended as it comes, so nothing a reader or a keyboard is on gets rebuilt; the [n]
   * links are made once the answer is complete. */
  append(delta) {
    this.text += delta;
    this.answer.append(delta);
  }

  finish(note, isError = false) {
    this.renderAnswer();
    this.answer.setAttribute("aria-busy", "false");
    if (isError) this.status.setAttribute("role", "alert");
    this.status.textContent = note;
    this.status.classList.toggle("error", isError);
    if (!isError) page.announce.textContent = note || "Answer complete.";
  }
}

function requestBody(messages) {
  const body = { messages, stream: true };
  if (modelId) body.model = modelId;
  if (page.search.value) body.search = page.search.value;
  const topK = page.topK.valueAsNumber;
  if (Number.isInteger(topK)) body.top_k = topK;
  const prefix = page.urlPrefix.value.trim();
  if (prefix) body.filter = { url_prefix: prefix };
  return body;
}

function setBusy(busy) {
  page.send.disabled = busy;
  page.stop.disabled = !busy;
}

async function ask(question) {
  const turn = new Turn(question);
  const thisChat = chat;
  const messages = [...history, { role: "user", content: question }];
  inFlight = new AbortController();
  setBusy(true);
  let answered = false;
  try {
    const response = await fetch(api("chat/completions"), {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody(messages)), signal: inFlight.signal,
    });
    if (!response.ok) {
      const message = await errorMessage(response);
      if (response.status === 401) askForKey(message);
      page.question.value ||= question; // one key press sends it again
      return turn.finish(message, true);
    }
    const stream = { complete: false };
    for await (const event of events(response, stream)) {
      if (event.error) return turn.finish(`The answer stopped: ${event.error.message}`, true);
      if (event.sources) turn.renderSources(event.sources);
      const delta = event.choices?.[0]?.delta?.content;
      if (delta) turn.append(delta);
    }
    if (!stream.complete) return turn.finish("The answer was cut off: the connection closed before its end.", true);
    answered = true;
    turn.finish("");
    if (!modelId) loadModel(); // the server answers now: fill in what failed at load
  } catch (e) {
    if (e.name !== "AbortError") return turn.finish(`The request failed: ${e.message}`, true);
    answered = turn.text.length > 0; // a stopped answer stays in the conversation as far as it went
    turn.finish("Stopped.");
  } finally {
    if (answered && thisChat === chat) history = [...messages, { role: "assistant", content: turn.text }];
    inFlight = null;
    setBusy(false);
    if (!document.activeElement || document.activeElement.disabled || document.activeElement === document.body) {
      page.question.focus(); // Send or Stop was focused and is now disabled
    }
  }
}

page.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const question = page.question.value.trim();
  if (!question || inFlight) return;
  page.question.value = "";
  ask(question);
});

page.question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    page.form.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && inFlight) inFlight.abort();
});

page.stop.addEventListener("click", () => inFlight?.abort());

page.newChat.addEventListener("click", () => {
  inFlight?.abort();
  chat += 1;
  history = [];
  page.conversation.replaceChildren();
  page.question.focus();
});

page.key.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
page.key.addEventListener("change", () => {
  const key = page.key.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  loadModel();
});

loadModel();
page.question.focus();
