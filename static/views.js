// views.js: what the page asks the server to show beyond feeds, and how entries are marked.
//
// SEARCH. The search box sets ?q= (the query language of the README: words, OR, -exclude,
// "phrases", field:term, /regex/); Enter (or clearing the box) applies it, the URL reflects it,
// and the server evaluates the query once per entry for everyone asking it. A query the server
// cannot parse comes back as a 400: its reason (with the position) shows under the box.
//
// STREAMS. One chip per configured stream (GET /api/streams) sets ?stream=<id>; one at a time.
//
// MARKS. A highlighted entry (a "highlight" rule matched it) carries a visible "Highlighted"
// label with an icon, a border and a tinted background: never colour alone. When one enters the
// list, a polite live region says so. Entry text gets dir="auto", so right-to-left titles read
// correctly.
//
// KEYS. "/" focuses the search box, "?" lists the shortcuts, Escape closes the list.

const MAX_QUERY = 500; // characters, as the server allows

const $ = (selector) => document.querySelector(selector);
const els = {
  search: $("#search"),
  searchError: $("#search-error"),
  streams: $("#streams"),
  announcer: $("#announcer"),
  help: $("#help"),
  shortcuts: $("#shortcuts"),
  shortcutsClose: $("#shortcuts-close"),
};

const params = new URLSearchParams(location.search);
const current = {
  q: cleanQuery(params.get("q")),
  stream: params.get("stream") || null,
  streams: [], // [{id, title, query, feeds}] from the server
};
let changed = () => {};

function cleanQuery(value) {
  if (typeof value !== "string") return null;
  const trimmed = value.trim();
  return trimmed ? trimmed.slice(0, MAX_QUERY) : null;
}

/** The search (?q=) and stream (?stream=) in force now. */
export function viewParams() {
  return { q: current.q ?? undefined, stream: current.stream ?? undefined };
}

/** Write ?q= and ?stream= into *url* (a URL object). */
export function writeViewParams(url) {
  if (current.q) url.searchParams.set("q", current.q);
  else url.searchParams.delete("q");
  if (current.stream) url.searchParams.set("stream", current.stream);
  else url.searchParams.delete("stream");
}

/** The stream chosen now (notifications then cover each of its entries), or null. */
export function chosenStream() {
  return current.stream;
}

/** The server refused the question (400): say why, next to what caused it. A private
 * server's 401 (the session expired, or the token changed): load the page again, which the
 * server (or the proxy in front of it) answers with its sign-in form. */
export function rejected({ status, error }) {
  if (status === 401) {
    location.reload();
    return;
  }
  const message = typeof error === "string" ? error : "the server refused the request";
  if (message.startsWith("stream:") && current.stream) {
    current.stream = null; // gone from the config: drop it and carry on without
    renderStreams();
    changed();
    return;
  }
  els.searchError.textContent = current.q ? `Search: ${message}` : message;
  els.searchError.hidden = false;
  els.search.setAttribute("aria-invalid", "true");
}

function clearError() {
  els.searchError.hidden = true;
  els.searchError.textContent = "";
  els.search.removeAttribute("aria-invalid");
}

// ---------------------------------------------------------------------------------------------
// Search box

function applySearch() {
  const q = cleanQuery(els.search.value);
  if (q === current.q) return;
  current.q = q;
  clearError();
  changed();
}

els.search.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    applySearch();
  } else if (event.key === "Escape" && els.search.value === "") {
    els.search.blur();
  }
});
els.search.addEventListener("search", applySearch); // Enter, or the clear button
els.search.addEventListener("input", () => {
  if (els.search.value === "") applySearch(); // cleared: back to everything at once
});

// ---------------------------------------------------------------------------------------------
// Stream chips

function renderStreams() {
  const chips = current.streams.map((stream) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip stream-chip";
    button.textContent = stream.title || stream.id;
    button.title = `Stream: ${stream.query}`;
    button.dataset.stream = stream.id;
    button.setAttribute("aria-pressed", String(current.stream === stream.id));
    return button;
  });
  els.streams.replaceChildren(...chips);
  els.streams.hidden = chips.length === 0;
}

els.streams.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.chip") : null;
  if (!button) return;
  const id = button.dataset.stream ?? null;
  current.stream = current.stream === id ? null : id;
  clearError();
  renderStreams();
  changed();
});

let streamsRetry = 2;
async function loadStreams() {
  try {
    const response = await fetch(new URL("/api/streams", location.href), {
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const streams = await response.json();
    current.streams = (Array.isArray(streams) ? streams : []).filter(
      (s) => s && typeof s.id === "string",
    );
    if (current.stream && !current.streams.some((s) => s.id === current.stream)) {
      current.stream = null;
      changed();
    }
    renderStreams();
    streamsRetry = 2;
  } catch {
    setTimeout(loadStreams, streamsRetry * 1000);
    streamsRetry = Math.min(streamsRetry * 2, 60);
  }
}

// ---------------------------------------------------------------------------------------------
// Marking entries

/** Mark a rendered entry: highlighted (label, not colour alone), text direction per field. */
export function decorate(item, entry) {
  for (const node of item.querySelectorAll(".title, .summary, .author, .feed, .tag")) {
    node.dir = "auto";
  }
  if (entry.highlight !== true) return;
  item.classList.add("highlighted");
  const flag = document.createElement("span");
  flag.className = "flag";
  const star = document.createElement("span");
  star.className = "flag-icon";
  star.setAttribute("aria-hidden", "true");
  star.textContent = "★";
  flag.append(star, "Highlighted");
  item.querySelector(".meta")?.prepend(flag);
}

/** Tell screen readers a highlighted entry just entered the list. */
export function announce(entry) {
  if (entry?.highlight !== true) return;
  const title = typeof entry.title === "string" && entry.title.trim() ? entry.title.trim() : "";
  const feed = typeof entry.feed_title === "string" ? entry.feed_title.trim() : "";
  els.announcer.textContent = "";
  // A fresh text node on the next frame: announced even when it repeats the last one.
  requestAnimationFrame(() => {
    els.announcer.textContent = `Highlighted: ${title || "an entry"}${feed ? ` (${feed})` : ""}`;
  });
}

// ---------------------------------------------------------------------------------------------
// Keyboard shortcuts

function typing(target) {
  return (
    target instanceof Element &&
    target.closest("input, textarea, select, [contenteditable]") !== null
  );
}

document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) return;
  if (event.key === "/") {
    event.preventDefault();
    els.search.focus();
    els.search.select();
  } else if (event.key === "?") {
    event.preventDefault();
    if (els.shortcuts.open) els.shortcuts.close();
    else els.shortcuts.showModal();
  }
});
els.help.addEventListener("click", () => els.shortcuts.showModal());
els.shortcutsClose.addEventListener("click", () => els.shortcuts.close());

// ---------------------------------------------------------------------------------------------
// Start

/** Wire the search box and the stream chips; *onChange* restarts the stream with them. */
export function setupViews({ onChange }) {
  changed = onChange;
  els.search.value = current.q ?? "";
  els.search.maxLength = MAX_QUERY;
  renderStreams();
  loadStreams();
}
