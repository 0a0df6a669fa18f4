/* The admin workspace: grants and the audit as sortable, filterable, paged tables, with Revoke
   and an export (CSV or JSON lines) of everything the filter shows. */
"use strict";
(() => {
  const { el, api, all, status, short, when, download, csv } = DA;
  const main = document.getElementById("da-main");
  const PAGE = 50;
  const ACTIONS = ["request.create", "request.approve", "request.deny", "request.withdraw",
    "grant.create", "grant.revoke", "grant.expire", "data.read", "data.preview", "data.query",
    "data.scan", "access.denied", "spawn.mounts"];

  const VIEWS = {
    grants: {
      label: "Grants", path: "/grants", sort: "-id",
      filters: [["user", "User"], ["dataset", "Dataset"],
        ["active", "Status", ["", "true", "false"], ["any", "active", "ended"]]],
      columns: [["id", "Grant", true], ["user", "User", true], ["dataset", "Dataset", true],
        ["status", "Status"], ["created_at", "Granted", true], ["expires_at", "Expires", true],
        ["revoked_by", "Revoked by"], ["request_id", "Request"]],
      cell: (g, c) => (c.endsWith("_at") ? when(g[c]) : g[c]),
      actions: (g) => (g.status === "active" ? revokeButton(g) : ""),
      rowKey: "data-grant-id",
    },
    audit: {
      label: "Audit", path: "/audit", sort: "-seq",
      filters: [["user", "User"], ["dataset", "Dataset"],
        ["action", "Action", ["", ...ACTIONS], ["any", ...ACTIONS]],
        ["since", "Since (ISO time)"]],
      columns: [["seq", "Seq", true], ["at", "Time", true], ["actor", "Actor", true],
        ["action", "Action", true], ["dataset", "Dataset", true], ["request_id", "Request"],
        ["grant_id", "Grant"], ["detail", "Detail"], ["hash", "Hash"]],
      cell: (a, c) => (c === "at" ? when(a.at) : c === "detail" ? short(JSON.stringify(a.detail), 60)
        : c === "hash" ? short(a.hash) : a[c]),
      actions: null,
      rowKey: "data-seq",
    },
  };
  const state = { view: "grants" };
  for (const name of Object.keys(VIEWS)) state[name] = { filter: {}, sort: VIEWS[name].sort, offset: 0 };

  function params(name) {
    const s = state[name];
    return { ...s.filter, sort: s.sort };
  }

  async function show() {
    const name = state.view;
    const view = VIEWS[name];
    const s = state[name];
    let page;
    try {
      page = await api(view.path, { params: { ...params(name), limit: PAGE, offset: s.offset } });
      if (document.getElementById("da-status").classList.contains("da-error")) status("");
    } catch (e) {
      status(`Could not load ${view.label.toLowerCase()}: ${e.message}`, true);
      page = { items: [], total: 0 };
    }
    render(name, page);
  }

  function render(name, page) {
    const view = VIEWS[name];
    const s = state[name];
    const tabs = el("div", { class: "da-tabs", role: "tablist" }, Object.entries(VIEWS).map(([key, v]) => {
      const tab = el("button", { role: "tab", "aria-selected": String(key === name), text: v.label });
      tab.addEventListener("click", () => { state.view = key; show(); });
      return tab;
    }));
    const form = el("form", { class: "da-filters", role: "search" });
    for (const [key, label, values, names] of view.filters) {
      const input = values
        ? el("select", { name: key }, values.map((v, i) => el("option", { value: v, text: names[i],
          selected: (s.filter[key] || "") === v })))
        : el("input", { name: key, value: s.filter[key] || "", autocomplete: "off" });
      form.append(el("label", {}, label, input));
    }
    const apply = el("button", { type: "submit", class: "da-primary", text: "Filter" });
    form.append(apply);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      s.filter = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
      s.offset = 0;
      show();
    });
    const exportCsv = el("button", { type: "button", text: "Export CSV" });
    const exportJson = el("button", { type: "button", text: "Export JSON lines" });
    exportCsv.addEventListener("click", () => exportAll(name, "csv"));
    exportJson.addEventListener("click", () => exportAll(name, "jsonl"));
    form.append(exportCsv, exportJson);

    const head = el("tr", {}, view.columns.map(([key, label, sortable]) => {
      if (!sortable) return el("th", { scope: "col", text: label });
      const current = s.sort.replace(/^-/, "") === key;
      const desc = s.sort.startsWith("-");
      const button = el("button", { type: "button", "data-sort": key,
        text: label + (current ? (desc ? " ▼" : " ▲") : "") });
      button.addEventListener("click", () => {
        s.sort = current && !desc ? `-${key}` : key;
        s.offset = 0;
        show();
      });
      return el("th", { scope: "col", "aria-sort": current ? (desc ? "descending" : "ascending") : "none" },
        button);
    }), view.actions ? el("th", { scope: "col", text: "" }) : null);
    const rows = page.items.map((item) => el("tr", { [view.rowKey]: item.id ?? item.seq },
      view.columns.map(([key]) => el("td", { class: key === "detail" ? "da-long" : "", "data-col": key },
        view.cell(item, key) ?? "")),
      view.actions ? el("td", {}, view.actions(item)) : null));
    const table = el("table", { class: "da-table", "aria-label": view.label },
      el("thead", {}, head), el("tbody", {}, rows));

    const from = page.total ? s.offset + 1 : 0;
    const to = s.offset + page.items.length;
    const prev = el("button", { type: "button", text: "Previous", disabled: s.offset === 0 });
    const next = el("button", { type: "button", text: "Next", disabled: to >= page.total });
    prev.addEventListener("click", () => { s.offset = Math.max(0, s.offset - PAGE); show(); });
    next.addEventListener("click", () => { s.offset += PAGE; show(); });
    const pager = el("div", { class: "da-pager" }, prev, next,
      el("span", { class: "da-count", text: `${from}–${to} of ${page.total}` }));

    main.replaceChildren(el("div", { class: "da-workspace" }, tabs, form,
      el("div", { class: "da-table-wrap" }, table), pager));
  }

  function revokeButton(grant) {
    const button = el("button", { type: "button", class: "da-danger", text: "Revoke",
      "aria-label": `Revoke ${grant.user}'s access to ${grant.dataset}` });
    let armed = false;
    button.addEventListener("click", async () => {
      if (!armed) {  // a second click confirms
        armed = true;
        button.textContent = "Confirm revoke";
        status(`${grant.user} loses access to ${grant.dataset} at their next read: click again to confirm`);
        setTimeout(() => { armed = false; button.textContent = "Revoke"; }, 8000);
        return;
      }
      button.disabled = true;
      try {
        await api(`/grants/${grant.id}`, { method: "DELETE" });
        status(`Revoked ${grant.user}'s access to ${grant.dataset}`);
      } catch (e) {
        status(`Could not revoke: ${e.message}`, true);
      }
      show();
    });
    return button;
  }

  async function exportAll(name, format) {
    const view = VIEWS[name];
    status(`Exporting ${view.label.toLowerCase()}…`);
    try {
      const items = await all(view.path, params(name));
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      if (format === "csv") {
        const columns = Object.keys(items[0] || Object.fromEntries(view.columns));
        download(`${name}-${stamp}.csv`, csv(items, columns), "text/csv");
      } else {
        download(`${name}-${stamp}.jsonl`, items.map((i) => JSON.stringify(i)).join("\n") + "\n",
          "application/x-ndjson");
      }
      status(`Exported ${items.length} ${view.label.toLowerCase()} records`);
    } catch (e) {
      status(`Could not export: ${e.message}`, true);
    }
  }

  show();
})();
