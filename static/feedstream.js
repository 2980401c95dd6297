// feedstream.js: a small, dependency-free client for a feedstream server's long-poll API.
//
//   import { feedStream } from "https://feeds.example.org/static/feedstream.js";
//   const stream = feedStream({
//     feeds: ["news"],                                   // optional filter
//     category: "Tech",                                  // optional: every feed of a category
//     stream: "security", q: "cve OR openssl",           // optional: a stream, a query
//     onEntries: (entries, info) => { ... },             // oldest first
//     onStatus: (status) => { ... },                     // "live" | "reconnecting" | "offline"
//     onRejected: ({ error }) => { ... },                // a 400: the stream stopped
//     onReset: (info) => { ... },                        // the server skipped entries
//     token: "...",                                      // a private server's read_token
//   });
//   stream.stop();
//
// It long-polls GET /api/entries?after=<cursor>, resumes from the last cursor after any error
// (so nothing is delivered twice and nothing is missed), backs off exponentially with jitter
// (0.5 s, 1 s, 2 s, ... capped at 30 s) and reports "offline" while the browser is offline or
// after OFFLINE_AFTER failures in a row. A request the server refuses with 400 (an unknown feed or
// stream, a query that does not parse) is never retried: the stream stops with status
// "rejected" and onRejected hears why. The server must allow the embedding origin through CORS.
//
// A private server (read_token, docs/access.md): a page served by the server itself reads with
// the login's session cookie (sent to the same origin by default). Anywhere else, pass `token`:
// it goes in an Authorization: Bearer header, never in the URL. A 401 or 403 (no or wrong
// credentials) stops the stream like a 400: asking again cannot help. EventSource (the server's
// /api/stream) cannot send headers: it reads with the cookie only, which is why this client
// long-polls with the header instead.

const OFFLINE_AFTER = 5; // consecutive failures before "reconnecting" becomes "offline"
const BACKOFF_BASE = 0.5; // seconds
const BACKOFF_CAP = 30; // seconds
const GRACE = 15; // seconds a long-poll may take beyond its timeout before it is given up

/**
 * Start streaming entries from a feedstream server.
 *
 * @param {object} options
 * @param {string} [options.url] Base URL of the server; default: the origin this module came from.
 * @param {string[]|string} [options.feeds] Only these feed ids (default: all feeds).
 * @param {string} [options.category] Only the feeds of this category (with `feeds`: either).
 * @param {string} [options.stream] Only the entries of this configured stream (GET /api/streams).
 * @param {string} [options.q] Only the entries this query matches (see the README).
 * @param {boolean} [options.duplicates] Also entries folded into another feed's (default: no).
 * @param {(info: {status: number, error: string}) => void} [options.onRejected] The server
 *   refused the request (400, or 401 / 403 without the right credentials): the stream has
 *   stopped.
 * @param {(entries: object[], info: {cursor: string, reset: boolean, initial: boolean}) => void}
 *   [options.onEntries] Called with each non-empty batch, oldest entry first.
 * @param {(status: "live"|"reconnecting"|"offline"|"rejected", info: {failures: number,
 *   retryIn: number, error: Error|null}) => void} [options.onStatus] Called when the connection
 *   status changes.
 * @param {(info: {cursor: string, entries: object[]}) => void} [options.onReset] Called when the
 *   server no longer knows the cursor and answered with its newest entries instead.
 * @param {string} [options.after] Resume after this cursor (default: start with the newest entries).
 * @param {number} [options.timeout=25] Seconds the server may hold a request open (max 60).
 * @param {number} [options.limit] Most entries per answer (server default 50).
 * @param {string} [options.token] A private server's read token, sent as
 *   `Authorization: Bearer <token>` (keep it out of pages other people can read).
 * @param {"same-origin"|"include"|"omit"} [options.credentials="same-origin"] Whether the
 *   session cookie goes along: "include" also sends it to another origin, which the server must
 *   list by name in cors_origins (and the cookie, SameSite=Strict, only goes within one site).
 * @returns {{stop(): void, readonly cursor: string|null, readonly status: string|null}}
 */
export function feedStream({
  url,
  feeds,
  category,
  stream,
  q,
  duplicates,
  onRejected,
  onEntries,
  onStatus,
  onReset,
  after,
  timeout = 25,
  limit,
  token,
  credentials = "same-origin",
} = {}) {
  const base = new URL(url ?? new URL(import.meta.url).origin);
  const feedList = Array.isArray(feeds) ? feeds : typeof feeds === "string" ? feeds.split(",") : [];
  const feedParam = feedList.map((f) => String(f).trim()).filter(Boolean).join(",");
  const stopper = new AbortController();
  let cursor = after ?? null;
  let status = null;
  let failures = 0;
  let wake = null; // resolves the current back-off sleep early (when the browser comes online)

  const setStatus = (next, info = {}) => {
    if (next === status) return;
    status = next;
    call(onStatus, next, { failures, retryIn: 0, error: null, ...info });
  };

  const online = () => typeof navigator === "undefined" || navigator.onLine !== false;
  const handleOnline = () => wake?.();
  const handleOffline = () => {
    setStatus("offline");
    inflight?.abort();
  };
  let inflight = null;
  if (typeof window !== "undefined") {
    window.addEventListener("online", handleOnline);
    window.addEventListener("offline", handleOffline);
  }

  const sleep = (seconds) =>
    new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stopper.signal.removeEventListener("abort", done);
        wake = null;
        resolve();
      };
      const timer = setTimeout(done, seconds * 1000);
      stopper.signal.addEventListener("abort", done);
      wake = done;
    });

  async function request() {
    const target = new URL("api/entries", base.href.endsWith("/") ? base : base.href + "/");
    // After a failure, ask for an immediate answer first: it proves the connection is back
    // (status "live") and catches up at once instead of after a whole long-poll.
    const wait = cursor === null ? 0 : failures > 0 ? 0 : timeout;
    if (cursor !== null) target.searchParams.set("after", cursor);
    target.searchParams.set("timeout", String(wait));
    if (feedParam) target.searchParams.set("feeds", feedParam);
    if (category) target.searchParams.set("category", String(category));
    if (stream) target.searchParams.set("stream", String(stream));
    if (q) target.searchParams.set("q", String(q));
    if (duplicates) target.searchParams.set("duplicates", "include");
    if (limit) target.searchParams.set("limit", String(limit));
    inflight = new AbortController();
    const giveUp = setTimeout(() => inflight.abort(), (wait + GRACE) * 1000);
    const relay = () => inflight.abort();
    stopper.signal.addEventListener("abort", relay);
    try {
      const headers = { Accept: "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      const response = await fetch(target, {
        signal: inflight.signal,
        cache: "no-store",
        credentials,
        headers,
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        const message = body && typeof body.error === "string" ? body.error : response.statusText;
        const error = new Error(`HTTP ${response.status}: ${message}`);
        error.status = response.status;
        error.reason = message;
        throw error;
      }
      if (!body || typeof body.cursor !== "string" || !Array.isArray(body.entries)) {
        throw new Error("malformed answer from /api/entries");
      }
      return body;
    } finally {
      clearTimeout(giveUp);
      stopper.signal.removeEventListener("abort", relay);
      inflight = null;
    }
  }

  async function run() {
    while (!stopper.signal.aborted) {
      if (!online()) {
        setStatus("offline");
        await sleep(BACKOFF_CAP); // woken early by the "online" event
        continue;
      }
      let page;
      try {
        const initial = cursor === null;
        page = await request();
        page.initial = initial;
      } catch (error) {
        if (stopper.signal.aborted) return;
        if (error.status === 400 || error.status === 401 || error.status === 403) {
          // The question itself is wrong, or we may not ask it: asking again cannot help.
          setStatus("rejected", { error });
          call(onRejected, { status: error.status, error: error.reason });
          stopper.abort();
          return;
        }
        failures += 1;
        const ceiling = Math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1));
        const retryIn = ceiling / 2 + (Math.random() * ceiling) / 2; // "equal jitter"
        const next = !online() || failures >= OFFLINE_AFTER ? "offline" : "reconnecting";
        if (next !== status) setStatus(next, { retryIn, error });
        await sleep(retryIn);
        continue;
      }
      if (stopper.signal.aborted) return;
      failures = 0;
      setStatus("live");
      const wasReset = page.reset === true && !page.initial;
      cursor = page.cursor;
      if (wasReset) call(onReset, { cursor, entries: page.entries });
      if (page.entries.length) {
        call(onEntries, page.entries, { cursor, reset: wasReset, initial: page.initial });
      }
    }
  }

  run().finally(() => {
    if (typeof window !== "undefined") {
      window.removeEventListener("online", handleOnline);
      window.removeEventListener("offline", handleOffline);
    }
  });

  return {
    stop() {
      stopper.abort();
    },
    get cursor() {
      return cursor;
    },
    get status() {
      return status;
    },
  };
}

function call(callback, ...args) {
  if (typeof callback !== "function") return;
  try {
    callback(...args);
  } catch (error) {
    // A bug in a callback must not stop the stream; report it without breaking the loop.
    setTimeout(() => {
      throw error;
    });
  }
}
