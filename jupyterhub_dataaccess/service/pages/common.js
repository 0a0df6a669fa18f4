/* Shared by the service's pages. Every value from the API goes in as text (textContent), never
   as markup. Requests go to the service's API with the login cookie and the page's XSRF token. */
"use strict";
const DA = (() => {
  const body = document.body;
  const API = body.dataset.api;
  const XSRF = body.dataset.xsrf;

  /** An element with attributes (on* never), children: nodes or strings (as text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) throw new Error("use addEventListener");
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(path, { method = "GET", body, params } = {}) {
    const url = new URL(API + path, window.location.href);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const init = { method, credentials: "same-origin", headers: { "X-XSRFToken": XSRF } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.message) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  /** Every item of a collection, page by page (what an export needs), up to `cap`. */
  async function all(path, params, cap = 100000) {
    const items = [];
    for (let offset = 0; ; offset += 200) {
      const page = await api(path, { params: { ...params, limit: 200, offset } });
      items.push(...page.items);
      if (page.items.length < 200 || items.length >= page.total || items.length >= cap) break;
    }
    return items.slice(0, cap);
  }

  function status(message, isError = false) {
    const node = document.getElementById("da-status");
    node.textContent = message;
    node.classList.toggle("da-error", isError);
  }

  /** A long value (a hash) shortened, the whole of it on hover and for copying. */
  function short(value, keep = 12) {
    const text = value === null || value === undefined ? "" : String(value);
    if (text.length <= keep + 1) return el("span", { text });
    return el("span", { title: text, "data-full": text, text: text.slice(0, keep) + "…" });
  }

  function when(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
  }

  function days(value) {
    if (value === null || value === undefined) return "—";
    const n = Number(value);
    return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/0+$/, "");
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function csv(rows, columns) {
    const cell = (v) => {
      let text = v === null || v === undefined ? "" :
        typeof v === "object" ? JSON.stringify(v) : String(v);
      // a spreadsheet would run text starting with these as a formula
      if (typeof v !== "number" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
      return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
    };
    return [columns.join(","), ...rows.map((r) => columns.map((c) => cell(r[c])).join(","))]
      .join("\r\n") + "\r\n";
  }

  return { el, api, all, status, short, when, days, download, csv };
})();
