// search.js: "search the history", a view of its own beside the live stream.
//
// The History button opens a panel above the stream with a search box: Enter (or Search) asks
// GET /api/search?q=<query>&order=rank|new&limit=20 and lists the results, each with its title
// and a snippet in which the matches are marked; "More results" (or "Older results", newest
// first) asks for the next page with the answer's `before` cursor and appends it. The live
// stream is not touched: it keeps running, or stays paused, whatever the panel does.
//
// SAFETY. The server sends title_html and snippet_html as escaped text with <mark> around the
// matches. They are still never given to innerHTML: markedText() accepts exactly the
// <mark>/</mark> pair and the five entities Python's html.escape writes, builds text nodes and
// <mark> elements, and treats anything else as text. Links are http(s) only.

import { el, safeUrl, text } from "./dom.js";

const LIMIT = 20;
const MAX_QUERY = 500; // characters, as the server allows

const $ = (selector) => document.querySelector(selector);
const els = {
  toggle: $("#history-toggle"),
  panel: $("#history"),
  input: $("#history-q"),
  order: $("#history-order"),
  go: $("#history-go"),
  close: $("#history-close"),
  error: $("#history-error"),
  summary: $("#history-summary"),
  results: $("#history-results"),
  more: $("#history-more"),
};

const state = {
  q: null, // the query shown
  order: "rank",
  before: null, // the next page's cursor, or null
  shown: 0,
  busy: false,
  asked: 0, // a counter: answers to an older question are dropped
};

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// ---------------------------------------------------------------------------------------------
// Opening and closing

function open() {
  els.panel.hidden = false;
  els.toggle.setAttribute("aria-pressed", "true");
  els.input.focus();
  els.input.select();
}

function close() {
  els.panel.hidden = true;
  els.toggle.setAttribute("aria-pressed", "false");
  els.toggle.focus();
}

els.toggle.addEventListener("click", () => (els.panel.hidden ? open() : close()));
els.close.addEventListener("click", close);
els.panel.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.preventDefault();
    close();
  }
});

// ---------------------------------------------------------------------------------------------
// Asking

function submit() {
  const q = els.input.value.trim().slice(0, MAX_QUERY);
  if (!q) return;
  state.q = q;
  state.order = els.order.value === "new" ? "new" : "rank";
  state.before = null;
  state.shown = 0;
  els.results.replaceChildren();
  ask(false);
}

els.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    submit();
  }
});
els.go.addEventListener("click", submit);
els.order.addEventListener("change", () => {
  if (state.q) submit();
});
els.more.addEventListener("click", () => ask(true));

async function ask(more) {
  const asked = ++state.asked;
  const url = new URL("/api/search", location.href);
  url.searchParams.set("q", state.q);
  url.searchParams.set("order", state.order);
  url.searchParams.set("limit", String(LIMIT));
  if (more && state.before) url.searchParams.set("before", state.before);
  setBusy(true);
  clearError();
  try {
    const response = await fetch(url, {
      cache: "no-store",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (asked !== state.asked) return; // a newer question was asked meanwhile
    if (!response.ok) {
      showError(typeof body.error === "string" ? body.error : `HTTP ${response.status}`);
      state.before = null;
      renderMore();
      return;
    }
    const results = Array.isArray(body.results) ? body.results : [];
    for (const result of results) els.results.append(renderResult(result));
    state.shown += results.length;
    state.before = typeof body.before === "string" ? body.before : null;
    renderSummary();
    renderMore();
  } catch {
    if (asked === state.asked) showError("the server could not be reached");
  } finally {
    if (asked === state.asked) setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  els.panel.setAttribute("aria-busy", String(busy));
  els.more.disabled = busy;
  els.go.disabled = busy;
}

function showError(message) {
  els.error.textContent = `Search: ${message}`;
  els.error.hidden = false;
  els.input.setAttribute("aria-invalid", "true");
  els.summary.textContent = "";
}

function clearError() {
  els.error.hidden = true;
  els.error.textContent = "";
  els.input.removeAttribute("aria-invalid");
}

function renderSummary() {
  const n = state.shown;
  const more = state.before ? "+" : "";
  els.summary.textContent =
    n === 0 ? `Nothing stored matches “${state.q}”.` : `${n}${more} ${n === 1 ? "result" : "results"} for “${state.q}”`;
}

function renderMore() {
  els.more.hidden = !state.before;
  els.more.textContent = state.order === "new" ? "Older results" : "More results";
}

// ---------------------------------------------------------------------------------------------
// A result

function renderResult(result) {
  const entry = result && typeof result.entry === "object" && result.entry ? result.entry : {};
  const item = el("li", "history-result");
  item.dataset.id = String(entry.id ?? "");
  const card = el("article", "card");
  const body = el("div", "card-body");

  const meta = el("p", "meta");
  meta.append(el("span", "feed", text(entry.feed_title) || text(entry.feed) || "feed"));
  const stamp = entry.published ?? entry.updated ?? entry.received;
  const date = typeof stamp === "string" ? new Date(stamp) : null;
  if (date && !Number.isNaN(date.getTime())) {
    const time = el("time", "when", when.format(date));
    time.dateTime = date.toISOString();
    meta.append(time);
  }
  const author = text(entry.author);
  if (author) meta.append(el("span", "author", author));
  body.append(meta);

  const heading = el("h3", "title");
  const title = markedText(result.title_html);
  const label = title.length ? title : [document.createTextNode(text(entry.title) || "Untitled")];
  const href = safeUrl(entry.url);
  const target = href ? el("a", "title-link") : el("span", "title-text");
  if (href) {
    target.href = href;
    target.target = "_blank";
    target.rel = "noopener noreferrer";
  }
  target.append(...label);
  heading.append(target);
  body.append(heading);

  const snippet = markedText(result.snippet_html);
  if (snippet.length) {
    const p = el("p", "summary history-snippet");
    p.append(...snippet);
    body.append(p);
  }
  for (const node of body.querySelectorAll(".title, .summary, .author, .feed")) node.dir = "auto";
  card.append(body);
  item.append(card);
  return item;
}

const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#x27;": "'" };

/** Nodes for the server's marked text: text nodes and <mark> elements, nothing else. */
export function markedText(html) {
  if (typeof html !== "string" || html === "") return [];
  const nodes = [];
  let mark = null;
  for (const part of html.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") {
      mark = document.createElement("mark");
      nodes.push(mark);
    } else if (part === "</mark>") {
      mark = null;
    } else if (part) {
      const decoded = part.replace(/&(?:amp|lt|gt|quot|#x27);/g, (entity) => ENTITIES[entity]);
      if (mark) mark.append(decoded);
      else nodes.push(document.createTextNode(decoded));
    }
  }
  return nodes;
}

// ---------------------------------------------------------------------------------------------
// Helpers




els.input.maxLength = MAX_QUERY;
