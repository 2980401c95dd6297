// alerts.js: desktop notifications (and an optional sound) while the tab is hidden.
//
// The "Notify" toggle asks for the Notification permission only when it is clicked, never on
// its own. Once on, and while the tab is hidden, each highlighted entry (or, with a stream chosen,
// each entry of that stream) gets a notification. Entries arriving within GROUP_WINDOW ms are
// shown together: up to GROUP_MAX one notification each, beyond that one summary, so a burst
// never floods the desktop. Clicking a notification focuses the page at that entry.
//
// The "Sound" toggle adds a short two-tone chime, synthesized with Web Audio (no file). Its
// AudioContext is created by the click, as browsers require. Both choices persist in
// localStorage; a stored "on" takes effect only if the permission is still granted.

import { text } from "./dom.js";

const GROUP_WINDOW = 1500; // ms: entries within this window are notified together
const GROUP_MAX = 3; // more than this in one window: a single summary notification
const STORE_NOTIFY = "feedstream.notify";
const STORE_SOUND = "feedstream.sound";

const $ = (selector) => document.querySelector(selector);
const els = { notify: $("#notify"), sound: $("#sound") };

const state = {
  notify: false,
  sound: false,
  pending: [], // entries waiting for the end of the window
  timer: null,
  audio: null, // AudioContext, made by a click
  reveal: () => {},
  notice: () => {},
  stream: () => null,
};

function supported() {
  return typeof window.Notification === "function";
}

function stored(key) {
  try {
    return localStorage.getItem(key) === "on";
  } catch {
    return false; // storage disabled: choices just do not persist
  }
}

function store(key, on) {
  try {
    localStorage.setItem(key, on ? "on" : "off");
  } catch {
    // storage disabled or full: the choice lasts for this page only
  }
}

function render() {
  els.notify.setAttribute("aria-pressed", String(state.notify));
  els.notify.title = state.notify
    ? "Notifications on: highlighted entries (or the chosen stream's) while this tab is hidden"
    : "Get a desktop notification for highlighted entries while this tab is hidden";
  els.sound.setAttribute("aria-pressed", String(state.sound));
  els.sound.hidden = !state.notify;
}

async function toggleNotify() {
  if (state.notify) {
    state.notify = false;
    store(STORE_NOTIFY, false);
    render();
    return;
  }
  if (!supported()) {
    state.notice("This browser cannot show notifications.");
    return;
  }
  let permission = Notification.permission;
  if (permission === "default") {
    try {
      permission = await Notification.requestPermission(); // only ever from this click
    } catch {
      permission = Notification.permission;
    }
  }
  if (permission !== "granted") {
    state.notice("Notifications are blocked for this site; allow them in the browser's settings.");
    return;
  }
  state.notify = true;
  store(STORE_NOTIFY, true);
  render();
}

function toggleSound() {
  state.sound = !state.sound;
  store(STORE_SOUND, state.sound);
  if (state.sound) {
    audioContext()?.resume?.();
    chime(); // a sample, and it unlocks audio for later
  }
  render();
}

function audioContext() {
  const Context = window.AudioContext ?? window.webkitAudioContext;
  if (!Context) return null;
  state.audio ??= new Context();
  return state.audio;
}

/** Two short sine tones with soft edges: quiet, and no file to fetch. */
function chime() {
  const context = state.audio;
  if (!context) return;
  const start = context.currentTime + 0.01;
  for (const [offset, frequency] of [
    [0, 880],
    [0.16, 1320],
  ]) {
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.type = "sine";
    tone.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.15, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.3);
    tone.connect(gain).connect(context.destination);
    tone.start(start + offset);
    tone.stop(start + offset + 0.32);
  }
}

// ---------------------------------------------------------------------------------------------
// Notifying


/** New entries have arrived (not a first page): notify the ones that call for it. */
export function consider(entries) {
  if (!state.notify || document.visibilityState !== "hidden") return;
  if (!supported() || Notification.permission !== "granted") return;
  const stream = state.stream();
  const wanted = entries.filter((e) => e && (stream ? true : e.highlight === true));
  if (!wanted.length) return;
  state.pending.push(...wanted);
  state.timer ??= setTimeout(flush, GROUP_WINDOW);
}

function flush() {
  state.timer = null;
  const entries = state.pending.splice(0);
  if (!entries.length) return;
  if (entries.length > GROUP_MAX) {
    const titles = entries.slice(0, 3).map((e) => text(e.title) || "Untitled");
    const more = entries.length - titles.length;
    show(`${entries.length} new ${state.stream() ? "entries" : "highlighted entries"}`, {
      body: titles.join("\n") + (more > 0 ? `\n… and ${more} more` : ""),
      tag: "feedstream-summary",
      entry: entries[0],
    });
  } else {
    for (const entry of entries) {
      const body = [text(entry.feed_title) || text(entry.feed), text(entry.summary)];
      show(text(entry.title) || "New entry", {
        body: body.filter(Boolean).join(" — ").slice(0, 200),
        tag: `feedstream-${String(entry.id ?? "")}`.slice(0, 200),
        entry,
      });
    }
  }
  if (state.sound) chime();
}

function show(title, { body, tag, entry }) {
  let note;
  try {
    note = new Notification(title, { body, tag, lang: document.documentElement.lang });
  } catch {
    return; // e.g. a mobile browser that only notifies from a service worker
  }
  note.onclick = (event) => {
    event?.preventDefault?.();
    window.focus();
    note.close();
    state.reveal(String(entry.id ?? ""), entry);
  };
}

// ---------------------------------------------------------------------------------------------
// Start

/**
 * Wire the toggles. *reveal(id, entry)* shows and focuses an entry; *notice(text)* tells the
 * person something; *stream()* is the chosen stream's id, or null.
 */
export function setupAlerts({ reveal, notice, stream }) {
  state.reveal = reveal;
  state.notice = notice;
  state.stream = stream;
  state.notify = stored(STORE_NOTIFY) && supported() && Notification.permission === "granted";
  state.sound = stored(STORE_SOUND);
  els.notify.addEventListener("click", toggleNotify);
  els.sound.addEventListener("click", toggleSound);
  if (state.sound) {
    // A stored choice: browsers let audio start only after a gesture, so wait for the first.
    const unlock = () => {
      audioContext()?.resume?.();
      document.removeEventListener("pointerdown", unlock);
      document.removeEventListener("keydown", unlock);
    };
    document.addEventListener("pointerdown", unlock);
    document.addEventListener("keydown", unlock);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.audio?.state === "suspended") {
      state.audio.resume?.();
    }
  });
  render();
}
