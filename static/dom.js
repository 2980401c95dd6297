// Small DOM and value helpers shared by the page's modules (app.js, search.js, alerts.js).

// An element with an optional class and text content (never HTML).
export function el(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

// A feed's string as one line of text; anything else as "".
export function text(value) {
  return typeof value === "string" ? value.replace(/\s+/g, " ").trim() : "";
}

// An absolute http(s) URL, or null: the server resolves feeds' relative ones.
export function safeUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}
