/* The approvals inbox: each request this steward may decide, with what the requester would see.
   Keyboard: j / k or the arrow keys move between requests; Tab reaches the comment, Approve, Deny. */
"use strict";
(() => {
  const { el, api, status, short, when, days } = DA;
  const main = document.getElementById("da-main");
  let items = [];
  let selected = 0;

  async function load(keepId) {
    try {
      const page = await api("/inbox", { params: { limit: 200 } });
      items = page.items;
      const at = items.findIndex((i) => i.request.id === keepId);
      selected = Math.max(0, Math.min(at >= 0 ? at : selected, items.length - 1));
      render();
      if (page.total > items.length) {
        status(`Showing the oldest ${items.length} of ${page.total} requests`);
      }
    } catch (e) {
      status(`Could not load requests: ${e.message}`, true);
    }
  }

  function render() {
    main.replaceChildren();
    if (!items.length) {
      main.append(el("p", { class: "da-empty", text: "No requests wait for your decision." }));
      return;
    }
    const list = el("ul", { class: "da-list", role: "listbox", "aria-label": "Requests" });
    items.forEach((item, i) => {
      const r = item.request;
      const button = el("button", {
        class: "da-item", role: "option", "aria-selected": String(i === selected),
        tabindex: i === selected ? "0" : "-1", "data-request-id": r.id,
      }, el("b", { text: r.user }), " · ", r.dataset,
      el("span", { class: "da-sub", text: `${days(r.days)} days · ${when(r.created_at)}` }));
      button.addEventListener("click", () => select(i));
      list.append(el("li", {}, button));
    });
    main.append(list, detail(items[selected]));
  }

  function select(i, focus = true) {
    if (!items.length) return;
    selected = (i + items.length) % items.length;
    render();
    if (focus) main.querySelector(".da-item[aria-selected='true']").focus();
  }

  function detail(item) {
    const r = item.request;
    const ds = item.dataset;
    const masks = ds ? Object.entries(ds.masks) : [];
    const asked = r.asked_days === null ? "not said (the maximum)" : `${days(r.asked_days)} days`;
    const over = r.asked_days !== null && r.max_days !== null && r.asked_days > r.max_days;
    const facts = el("dl", { class: "da-facts" },
      el("dt", { text: "Requester" }), el("dd", { class: "da-requester", text: r.user }),
      el("dt", { text: "Dataset" }),
      el("dd", { text: ds ? `${ds.title} (${ds.id}), ${ds.classification}` : r.dataset }),
      el("dt", { text: "Days" }),
      el("dd", { class: "da-days" }, `asked ${asked} · maximum ${days(r.max_days)} · `,
        el("span", { class: over ? "da-over" : "", text: `would get ${days(r.days)} days` })),
      el("dt", { text: "Masked columns" }),
      el("dd", { class: "da-masks" }, masks.length ? masks.map(([column, how], n) => [
        n ? ", " : "", el("span", { class: "da-mask", text: `${column} (${how})` })]) : "none"),
      el("dt", { text: "Row filter" }),
      el("dd", { class: "da-filter", text: ds && ds.row_filter ? ds.row_filter : "none" }),
      el("dt", { text: "Approvals" }),
      el("dd", { class: "da-approvals",
        text: `${item.approvals_given} of ${item.approvals_given + item.approvals_needed} given, ` +
              `${item.approvals_needed} still needed` }),
      el("dt", { text: "Policy" }), el("dd", { text: r.reason }),
      el("dt", { text: "Asked" }), el("dd", { text: when(r.created_at) }),
    );
    const grants = item.requester_grants.length ? el("table", { class: "da-table da-grants" },
      el("thead", {}, el("tr", {}, ["Dataset", "Status", "Expires"].map((h) => el("th", { text: h })))),
      el("tbody", {}, item.requester_grants.map((g) => el("tr", {},
        el("td", { text: g.dataset }), el("td", { text: g.status }),
        el("td", { text: when(g.expires_at) })))))
      : el("p", { class: "da-hint", text: "None." });
    const comment = el("textarea", { id: "da-comment", "aria-label": "Comment", maxlength: 4000,
      placeholder: "Comment for the requester (optional)" });
    const approve = el("button", { class: "da-primary", text: "Approve" });
    const deny = el("button", { class: "da-danger", text: "Deny" });
    approve.addEventListener("click", () => decide(item, "approve", comment.value, [approve, deny]));
    deny.addEventListener("click", () => decide(item, "deny", comment.value, [approve, deny]));
    return el("section", { class: "da-detail", "aria-label": "Request" },
      el("h2", { text: `${r.user} asks for ${r.dataset}` }),
      facts,
      el("h3", { text: "Justification" }),
      el("div", { class: "da-justification", text: r.justification }),
      el("h3", { text: `${r.user}'s grants on datasets you look after` }), grants,
      el("div", { class: "da-decide" },
        el("label", { for: "da-comment", text: "Comment" }), comment,
        el("div", { class: "da-buttons" }, approve, deny),
        el("span", { class: "da-hint", text: "j / k or ↓ / ↑: next / previous request" })));
  }

  async function decide(item, verdict, comment, buttons) {
    const r = item.request;
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const result = await api(`/requests/${r.id}/${verdict}`, { method: "POST", body: { comment } });
      const done = verdict === "approve" ? "Approved" : "Denied";
      const more = result.status === "pending" ? " (more approvals needed)" : "";
      status(`${done} ${r.user}'s request for ${r.dataset}${more}`);
    } catch (e) {
      status(`Could not ${verdict}: ${e.message}`, true);
    }
    const next = items[selected + 1];
    await load(next ? next.request.id : undefined);
    const focusable = main.querySelector(".da-item[aria-selected='true']");
    if (focusable) focusable.focus();
  }

  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest && event.target.closest("textarea, input, select");
    if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "j" || event.key === "ArrowDown") { select(selected + 1); event.preventDefault(); }
    if (event.key === "k" || event.key === "ArrowUp") { select(selected - 1); event.preventDefault(); }
  });

  load();
})();
