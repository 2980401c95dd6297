// feedstream page: a paced, pausable, never-scrolling stream of feed entries.
//
// PACING. New entries wait in a queue and enter the list one at a time. After an entry is
// shown, the next one enters after
//
//     interval = max(min(pace, 0.25), pace / (1 + max(0, waiting - 10) / 20))   [seconds]
//
// where `pace` is the chosen pace (default 2 s, `?pace=<seconds>` or the Pace menu) and
// `waiting` is the number of entries still queued. Up to 10 waiting entries keep the exact pace;
// beyond that the stream speeds up gently and linearly (30 waiting: twice as fast, 110: six
// times), never faster than one entry every 0.25 s (or the pace itself when that is smaller).
// At the default pace a backlog of 1000 entries is worked off in about five minutes instead of
// more than half an hour, so the stream never falls hours behind. The queue holds at most
// QUEUE_LIMIT entries; past that the oldest are dropped and the page says so.
//
// PAUSING. Nothing moves (no insertion, no animation, no clock update) while the mouse is over
// the list, while the list or something in it has keyboard focus, or while the pause button is
// pressed (Space anywhere toggles it; a tap on the list toggles it on touch screens). Entries
// keep arriving meanwhile and the waiting count keeps growing.
//
// SAFETY. Entry data is only ever inserted as text (textContent, attributes set through the
// DOM); links and images are used only for http(s) URLs. The page runs under a strict CSP: no
// inline script or style, styles are classes or CSSOM properties set from this module. Feed
// icons come from this server only (/api/feeds/<id>/icon: fetched by the server, or generated).
// With the server's media proxy on, an entry's image is a /media/ path of this server (the
// CSP then allows images from 'self' only) and `image_source` holds the original URL.
//
// SEARCH, STREAMS, HIGHLIGHTS: views.js. NOTIFICATIONS and their sound: alerts.js.

import { consider, setupAlerts } from "./alerts.js";
import { el, safeUrl, text } from "./dom.js";
import { feedStream } from "./feedstream.js";
import {
  announce,
  chosenStream,
  decorate,
  rejected,
  setupViews,
  viewParams,
  writeViewParams,
} from "./views.js";

const DEFAULT_PACE = 2; // seconds between entries
const MIN_INTERVAL = 0.25; // seconds: the fastest the catch-up speed-up may go
const SPEEDUP_FREE = 10; // waiting entries that never change the pace
const SPEEDUP_SCALE = 20; // every 20 more waiting entries add one "pace" worth of speed
const QUEUE_LIMIT = 1000; // waiting entries kept; older ones are dropped
const SEEN_LIMIT = 5000; // ids remembered to drop duplicates
const MAX_ROWS = 200; // entries kept in the DOM at most (the viewport usually holds fewer)
const PACE_CHOICES = [0.5, 1, 2, 3, 5, 10];
const CLOCK_EVERY = 30_000; // ms between refreshes of the relative times

const $ = (selector) => document.querySelector(selector);
const els = {
  stream: $("#stream"),
  log: $("#log"),
  list: $("#entries"),
  empty: $("#empty"),
  status: $("#status"),
  statusText: $("#status-text"),
  waiting: $("#waiting"),
  paused: $("#paused"),
  pauseButton: $("#pause"),
  pauseLabel: $("#pause-label"),
  pace: $("#pace"),
  chips: $("#chips"),
  notice: $("#notice"),
  noticeText: $("#notice-text"),
  noticeClose: $("#notice-close"),
};

const params = new URLSearchParams(location.search);
const state = {
  pace: parsePace(params.get("pace")) ?? DEFAULT_PACE,
  feeds: new Set((params.get("feeds") ?? "").split(",").filter(Boolean)),
  category: (params.get("category") ?? "").trim() || null, // every feed of one category
  queue: [],
  seen: new Set(),
  pause: { hover: false, focus: false, manual: false },
  lastInsert: -Infinity,
  timer: null,
  stream: null,
  knownFeeds: new Map(), // id -> title
  feedCategories: new Map(), // id -> category, for feeds that have one
};

const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

// ---------------------------------------------------------------------------------------------
// Pacing

/** Seconds until the next entry may enter, given how many are still waiting after it. */
export function effectiveInterval(pace, waiting) {
  const floor = Math.min(pace, MIN_INTERVAL);
  return Math.max(floor, pace / (1 + Math.max(0, waiting - SPEEDUP_FREE) / SPEEDUP_SCALE));
}

function isPaused() {
  const { hover, focus, manual } = state.pause;
  return hover || focus || manual;
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = null;
  renderWaiting();
  if (isPaused() || state.queue.length === 0) return;
  const interval = effectiveInterval(state.pace, state.queue.length - 1) * 1000;
  const delay = Math.max(0, state.lastInsert + interval - performance.now());
  state.timer = setTimeout(tick, delay);
}

function tick() {
  state.timer = null;
  if (!isPaused() && state.queue.length > 0) {
    const entry = state.queue.shift();
    const interval = effectiveInterval(state.pace, state.queue.length);
    insert(entry, interval);
    state.lastInsert = performance.now();
  }
  schedule();
}

function enqueue(entries) {
  for (const entry of entries) {
    if (!remember(entry)) continue;
    state.queue.push(entry);
  }
  const excess = state.queue.length - QUEUE_LIMIT;
  if (excess > 0) {
    state.queue.splice(0, excess);
    showNotice(`Skipped ${excess} older ${excess === 1 ? "entry" : "entries"} to keep up.`);
  }
  schedule();
}

/** Record the entry's id; false when it was seen already (a duplicate). */
function remember(entry) {
  if (!entry || typeof entry !== "object") return false;
  const id = String(entry.id ?? entry.cursor ?? "");
  if (state.seen.has(id)) return false;
  state.seen.add(id);
  if (state.seen.size > SEEN_LIMIT) {
    const oldest = state.seen.values().next().value;
    state.seen.delete(oldest);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The list

function insert(entry, interval) {
  const item = renderEntry(entry);
  announce(entry); // a highlighted one is said out loud
  els.list.prepend(item);
  els.empty.hidden = true;
  if (!reducedMotion.matches && interval > 0) {
    for (const animation of els.list.getAnimations({ subtree: true })) {
      if (animation.effect?.target === els.list) animation.finish();
    }
    const gap = parseFloat(getComputedStyle(els.list).rowGap) || 0;
    const shift = item.offsetHeight + gap;
    const duration = Math.min(450, interval * 600);
    const slide = els.list.animate(
      [{ transform: `translateY(${-shift}px)` }, { transform: "translateY(0)" }],
      { duration, easing: "cubic-bezier(0.22, 1, 0.36, 1)" },
    );
    item.animate([{ opacity: 0 }, { opacity: 1 }], { duration, easing: "ease-out" });
    item.classList.add("fresh");
    slide.finished.then(trim, () => {});
  } else {
    trim();
  }
}

/** Show a batch at once (first load, after a filter change or a reset), newest on top. */
function showAtOnce(entries) {
  if (isPaused()) {
    enqueue(entries); // nothing moves while paused: they take their turn afterwards
    return;
  }
  // A batch is not news: keep screen readers from announcing every entry of it.
  els.log.setAttribute("aria-busy", "true");
  for (const entry of entries) {
    if (remember(entry)) els.list.prepend(renderEntry(entry));
  }
  els.empty.hidden = els.list.childElementCount > 0;
  trim();
  setTimeout(() => els.log.setAttribute("aria-busy", "false"), 100);
}

/** Drop the entries that no longer fit the viewport (the oldest, at the bottom). */
function trim() {
  const rows = els.list.children;
  while (rows.length > MAX_ROWS) rows[rows.length - 1].remove();
  const room = els.stream.clientHeight - els.list.offsetTop;
  while (rows.length > 1 && rows[rows.length - 1].offsetTop >= room) {
    rows[rows.length - 1].remove();
  }
}

function renderEntry(entry) {
  const item = el("li", "entry");
  item.dataset.id = String(entry.id ?? "");
  item.dataset.feed = String(entry.feed ?? "");
  item.style.setProperty("--feed-hue", String(hue(String(entry.feed ?? ""))));

  const card = el("article", "card");
  const body = el("div", "card-body");

  const meta = el("p", "meta");
  const feedName = el("span", "feed", text(entry.feed_title) || text(entry.feed) || "feed");
  const feedIconImg = feedIcon(String(entry.feed ?? ""), "feed-icon");
  if (feedIconImg) feedName.prepend(feedIconImg);
  meta.append(feedName);
  const when = entry.published ?? entry.updated ?? entry.received;
  const date = when ? new Date(when) : null;
  if (date && !Number.isNaN(date.getTime())) {
    const time = el("time", "when", relativeTime(date));
    time.dateTime = date.toISOString();
    time.title = exact.format(date);
    meta.append(time);
  }
  const author = text(entry.author);
  if (author) meta.append(el("span", "author", author));
  body.append(meta);

  const heading = el("h2", "title");
  const title = text(entry.title) || text(entry.summary).slice(0, 80) || "Untitled";
  const href = safeUrl(entry.url);
  if (href) {
    const link = el("a", "title-link", title);
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    heading.append(link);
  } else {
    heading.append(el("span", "title-text", title));
  }
  body.append(heading);

  const summary = text(entry.summary);
  if (summary && summary !== title) body.append(el("p", "summary", summary));

  const tags = Array.isArray(entry.tags) ? entry.tags.map(text).filter(Boolean).slice(0, 4) : [];
  if (tags.length) {
    const list = el("ul", "tags");
    list.setAttribute("aria-label", "Tags");
    for (const tag of tags) list.append(el("li", "tag", tag));
    body.append(list);
  }
  card.append(body);

  const image = imageUrl(entry.image);
  if (image) {
    const img = el("img", "thumb");
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.referrerPolicy = "no-referrer";
    img.addEventListener("error", () => img.remove(), { once: true });
    img.src = image;
    card.append(img);
    card.classList.add("has-thumb");
  }
  item.append(card);
  decorate(item, entry); // the "Highlighted" label, dir="auto"
  return item;
}

function refreshClock() {
  if (isPaused() || document.hidden) return;
  for (const time of els.list.querySelectorAll("time[datetime]")) {
    time.textContent = relativeTime(new Date(time.dateTime));
  }
}

function relativeTime(date) {
  const seconds = Math.min(0, (date.getTime() - Date.now()) / 1000); // a future date is "now"
  const abs = -seconds;
  if (abs < 45) return relative.format(0, "second");
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return date.toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
}

// ---------------------------------------------------------------------------------------------
// Pausing

function setPause(reason, value) {
  if (state.pause[reason] === value) return;
  const before = isPaused();
  state.pause[reason] = value;
  const after = isPaused();
  if (before !== after) {
    for (const animation of els.list.getAnimations({ subtree: true })) {
      if (after) animation.pause();
      else animation.play();
    }
  }
  renderPause();
  schedule();
}

function renderPause() {
  const { hover, focus, manual } = state.pause;
  els.pauseLabel.textContent = manual ? "Resume" : "Pause";
  els.pauseButton.classList.toggle("is-paused", manual);
  els.stream.toggleAttribute("data-paused", isPaused());
  els.paused.hidden = !isPaused();
  els.paused.classList.toggle("manual", manual && !hover && !focus);
  els.paused.textContent = manual
    ? "Paused"
    : hover
      ? "Paused while hovering"
      : focus
        ? "Paused while focused"
        : "";
}

function isTyping(target) {
  return (
    target instanceof Element &&
    target.closest("input, textarea, select, button, a[href], summary, [contenteditable]") !== null
  );
}

els.stream.addEventListener("pointerenter", (event) => {
  if (event.pointerType !== "touch") setPause("hover", true);
});
els.stream.addEventListener("pointerleave", (event) => {
  if (event.pointerType !== "touch") setPause("hover", false);
});
els.stream.addEventListener("pointerup", (event) => {
  if (event.pointerType === "touch" && !(event.target instanceof Element && event.target.closest("a"))) {
    setPause("manual", !state.pause.manual);
  }
});
els.stream.addEventListener("focusin", (event) => {
  // Only keyboard focus pauses; a click or tap also focuses the list but shows no focus ring.
  if (event.target instanceof Element && event.target.matches(":focus-visible")) {
    setPause("focus", true);
  }
});
els.stream.addEventListener("focusout", (event) => {
  if (!(event.relatedTarget instanceof Node && els.stream.contains(event.relatedTarget))) {
    setPause("focus", false);
  }
});
els.pauseButton.addEventListener("click", () => setPause("manual", !state.pause.manual));
document.addEventListener("keydown", (event) => {
  if (event.key !== " " || event.repeat || event.altKey || event.ctrlKey || event.metaKey) return;
  if (isTyping(event.target)) return; // a focused button handles Space itself
  event.preventDefault();
  setPause("manual", !state.pause.manual);
});

// ---------------------------------------------------------------------------------------------
// Status, waiting count, notices

const STATUS_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  rejected: "Stopped",
};

function renderStatus(status, info = {}) {
  els.status.dataset.state = status;
  els.statusText.textContent = STATUS_TEXT[status] ?? status;
  els.status.title =
    status === "live"
      ? "Connected: new entries arrive as they are published"
      : info.retryIn
        ? `Connection lost; retrying in ${Math.ceil(info.retryIn)} s`
        : "";
}

function renderWaiting() {
  const n = state.queue.length;
  els.waiting.hidden = n === 0;
  els.waiting.textContent = `${n} waiting`;
  els.waiting.title = n ? `${n} new ${n === 1 ? "entry" : "entries"} queued` : "";
}

let noticeTimer = null;
function showNotice(message) {
  els.noticeText.textContent = message;
  els.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (els.notice.hidden = true), 30_000);
}
els.noticeClose.addEventListener("click", () => (els.notice.hidden = true));

// ---------------------------------------------------------------------------------------------
// Pace menu

function parsePace(value) {
  if (value === null || value === "") return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds > 0 && seconds <= 3600 ? seconds : null;
}

function renderPaceMenu() {
  const choices = [...new Set([...PACE_CHOICES, state.pace])].sort((a, b) => a - b);
  els.pace.replaceChildren(
    ...choices.map((seconds) => {
      const option = el("option", "", `${seconds} s`);
      option.value = String(seconds);
      option.selected = seconds === state.pace;
      return option;
    }),
  );
}

els.pace.addEventListener("change", () => {
  const seconds = parsePace(els.pace.value);
  if (seconds === null) return;
  state.pace = seconds;
  updateUrl();
  schedule();
});

// ---------------------------------------------------------------------------------------------
// Feed filter

// Feeds without a category come first; then one group per category (in /api/feeds order),
// led by a category chip that selects all its feeds at once (?category=).
function renderChips() {
  const chips = [chip("", "All feeds")];
  const groups = new Map(); // category -> its chips
  for (const [id, title] of state.knownFeeds) {
    const category = state.feedCategories.get(id);
    if (!category) {
      chips.push(chip(id, title));
      continue;
    }
    if (!groups.has(category)) groups.set(category, [categoryChip(category)]);
    groups.get(category).push(chip(id, title));
  }
  for (const id of state.feeds) if (!state.knownFeeds.has(id)) chips.push(chip(id, id));
  for (const [category, members] of groups) {
    const group = el("div", "chip-group");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", category);
    group.append(...members);
    chips.push(group);
  }
  els.chips.replaceChildren(...chips);
}

function chip(id, label) {
  const button = el("button", "chip", label);
  button.type = "button";
  button.dataset.feed = id;
  const pressed = id === "" ? state.feeds.size === 0 && !state.category : state.feeds.has(id);
  button.setAttribute("aria-pressed", String(pressed));
  if (id) {
    button.style.setProperty("--feed-hue", String(hue(id)));
    const icon = feedIcon(id, "chip-icon");
    if (icon) {
      button.prepend(icon);
      button.classList.add("has-icon");
    }
  }
  return button;
}

function categoryChip(category) {
  const button = el("button", "chip category", category);
  button.type = "button";
  button.dataset.category = category;
  button.title = `Every feed in ${category}`;
  button.setAttribute("aria-pressed", String(state.category === category));
  return button;
}

const FEED_ID = /^[a-z0-9_-]{1,64}$/;

/** The feed's icon, from this server only (it fetched the icon, or generated one). */
function feedIcon(feed, className) {
  if (!FEED_ID.test(feed)) return null;
  const img = el("img", className);
  img.alt = "";
  img.width = 16;
  img.height = 16;
  img.decoding = "async";
  img.referrerPolicy = "no-referrer";
  img.addEventListener("error", () => img.remove(), { once: true });
  img.src = `/api/feeds/${feed}/icon`;
  return img;
}

els.chips.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.chip") : null;
  if (!button) return;
  const category = button.dataset.category;
  const id = button.dataset.feed ?? "";
  if (category !== undefined) state.category = state.category === category ? null : category;
  else if (id === "") {
    state.feeds.clear();
    state.category = null;
  } else if (state.feeds.has(id)) state.feeds.delete(id);
  else state.feeds.add(id);
  renderChips();
  updateUrl();
  restart();
});

let feedsRetry = 2;
async function loadFeeds() {
  try {
    const response = await fetch(new URL("/api/feeds", location.href), {
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const feeds = await response.json();
    state.knownFeeds.clear();
    state.feedCategories.clear();
    for (const feed of Array.isArray(feeds) ? feeds : []) {
      if (feed && typeof feed.id === "string") {
        state.knownFeeds.set(feed.id, text(feed.title) || feed.id);
        // As the server spells it: the ?category= filter must name it exactly.
        if (typeof feed.category === "string" && feed.category.trim()) {
          state.feedCategories.set(feed.id, feed.category);
        }
      }
    }
    const categories = new Set(state.feedCategories.values());
    if (state.category && !categories.has(state.category)) {
      state.category = null; // gone from the config: the server would refuse the filter
      updateUrl();
      restart();
    }
    renderChips();
    feedsRetry = 2;
  } catch {
    setTimeout(loadFeeds, feedsRetry * 1000);
    feedsRetry = Math.min(feedsRetry * 2, 60);
  }
}

// ---------------------------------------------------------------------------------------------
// The connection

function restart() {
  state.stream?.stop();
  clearTimeout(state.timer);
  state.queue.length = 0;
  state.seen.clear();
  els.list.replaceChildren();
  els.empty.hidden = false;
  renderWaiting();
  state.stream = feedStream({
    url: location.origin,
    feeds: [...state.feeds],
    category: state.category ?? undefined,
    ...viewParams(), // ?stream= and ?q=
    onRejected: rejected,
    onStatus: renderStatus,
    onReset: () => {
      state.queue.length = 0;
      showNotice("Some entries were skipped: the server no longer had everything since the last update.");
    },
    onEntries: (entries, info) => {
      if (entries.some((entry) => entry && entry.feed && !state.knownFeeds.has(entry.feed))) {
        loadFeeds();
      }
      if (info.initial || info.reset) {
        showAtOnce(entries);
        renderWaiting();
      } else {
        enqueue(entries);
        consider(entries); // desktop notifications, while the tab is hidden
      }
    },
  });
}

/** Show the entry *id* at the top of the list (from the list, the queue, or *entry*) and
 * focus it: where a notification's click lands. */
function reveal(id, entry) {
  let item = [...els.list.children].find((row) => row.dataset.id === id);
  if (!item) {
    const queued = state.queue.findIndex((waiting) => String(waiting.id ?? "") === id);
    const chosen = queued >= 0 ? state.queue.splice(queued, 1)[0] : entry;
    if (!chosen) return;
    item = renderEntry(chosen);
    els.list.prepend(item);
    els.empty.hidden = true;
    trim();
    renderWaiting();
  }
  item.tabIndex = -1;
  item.classList.add("revealed");
  item.focus();
}

function updateUrl() {
  const url = new URL(location.href);
  if (state.pace === DEFAULT_PACE) url.searchParams.delete("pace");
  else url.searchParams.set("pace", String(state.pace));
  if (state.feeds.size) url.searchParams.set("feeds", [...state.feeds].join(","));
  else url.searchParams.delete("feeds");
  if (state.category) url.searchParams.set("category", state.category);
  else url.searchParams.delete("category");
  writeViewParams(url);
  history.replaceState(null, "", url);
}

// ---------------------------------------------------------------------------------------------
// Helpers



// An entry's image: an http(s) URL, or a /media/ path of this server (the media proxy).
function imageUrl(value) {
  if (typeof value === "string" && value.startsWith("/media/")) {
    const url = new URL(value, location.origin);
    return url.origin === location.origin ? url.href : null;
  }
  return safeUrl(value);
}


// Hues that stay readable as text on both themes (see --feed-s / --feed-l in app.css).
const HUES = [221, 340, 158, 266, 22, 192, 300, 128, 240, 4];

function hue(id) {
  let h = 0;
  for (const char of id) h = (h * 31 + char.codePointAt(0)) >>> 0;
  return HUES[h % HUES.length];
}

// ---------------------------------------------------------------------------------------------
// Start

renderPaceMenu();
renderChips();
renderPause();
renderWaiting();
renderStatus("connecting");
new ResizeObserver(() => trim()).observe(els.stream);
setInterval(refreshClock, CLOCK_EVERY);
setupViews({
  onChange: () => {
    updateUrl();
    restart();
  },
});
setupAlerts({ reveal, notice: showNotice, stream: chosenStream });
loadFeeds();
restart();
