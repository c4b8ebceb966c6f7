/* A branch's desk. Every action is a call to this node's JSON API with the staff session and
   its CSRF token; every refusal shows the API's reason. Barcode scanners type like a
   keyboard and press Enter, so each form moves on with Enter. Data is set with textContent. */
"use strict";

(function () {
  const K = window.Kitap;
  const S = JSON.parse(K.$("desk-strings").textContent);
  const C = JSON.parse(K.$("desk-config").textContent);
  K.useZone(C.tz);
  let csrf = null;
  let shownCard = null;

  // -- calls ---------------------------------------------------------------------------------

  async function call(method, url, body) {
    const headers = method === "GET" ? {} : {"X-CSRF-Token": csrf || ""};
    let res;
    try {
      res = await K.api(method, url, body, headers);
    } catch (err) {
      return {status: 0, ok: false, body: {message: S["err.network"]}};
    }
    if (res.status === 401 && url !== "/api/session") {
      showLogin(S["d.expired"]);
    }
    return res;
  }

  /* A message box: ok (green) or a refusal (the reason's title in this language, then the
     API's own words). */
  function say(box, ok, text, detail) {
    const node = K.$(box);
    K.clear(node);
    node.className = "msg " + (ok ? "ok" : "err");
    node.append(K.el("strong", {text: text}));
    if (detail) node.append(K.el("span", {class: "detail", text: detail}));
  }

  function refuse(box, res) {
    const body = res.body || {};
    const errors = body.errors || {};
    const code = typeof errors.refusal === "string" ? errors.refusal : null;
    const fields = [];
    for (const where of ["json", "query", "path"]) {
      for (const [name, msgs] of Object.entries(errors[where] || {})) {
        fields.push(name + " — " + [].concat(msgs).join(" "));
      }
    }
    const title = (code && S["r." + code]) || (res.status === 422 ? S["r.invalid"] : S["r.refused"]);
    const detail = [body.message, fields.join(" · ")].filter(Boolean).join(" — ");
    say(box, false, title, detail || null);
  }

  function money(tiyn) {
    const whole = Math.floor(tiyn / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
    const part = tiyn % 100;
    return whole + (part ? "," + String(part).padStart(2, "0") : "") + " ₸";
  }

  function tiynOf(text) {
    const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
    if (!m) return null;
    return parseInt(m[1], 10) * 100 + (m[2] ? parseInt(m[2].padEnd(2, "0"), 10) : 0);
  }

  // -- login ---------------------------------------------------------------------------------

  function showLogin(message) {
    csrf = null;
    K.$("work").hidden = true;
    K.$("logout").hidden = true;
    K.$("who-name").textContent = "";
    K.$("login").hidden = false;
    const msg = K.$("login-msg");
    msg.textContent = message || "";
    msg.className = message ? "msg err" : "msg";
    K.$("login-user").focus();
  }

  function showWork(who) {
    csrf = who.csrf;
    K.$("who-name").textContent = who.username;
    K.$("logout").hidden = false;
    K.$("login").hidden = true;
    K.$("work").hidden = false;
    K.$("co-card").focus();
    loadHolds();
    loadJournal();
  }

  K.$("login-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const res = await call("POST", "/api/session", {
      username: K.$("login-user").value.trim(), password: K.$("login-password").value});
    K.$("login-password").value = "";
    if (res.ok) {
      showWork(res.body);
    } else {
      showLogin("");
      say("login-msg", false, S["d.login.failed"], (res.body && res.body.message) || null);
    }
  });

  K.$("logout").addEventListener("click", async function () {
    await call("DELETE", "/api/session");
    showLogin("");
  });

  // -- link, outbox, freshness --------------------------------------------------------------

  async function refreshStatus() {
    try {
      const res = await K.api("GET", "/api/status");
      if (res.ok) renderStatus(res.body);
    } catch (err) {
      renderStatus(null);
    }
  }

  async function pollStatus() {
    await refreshStatus();
    setTimeout(pollStatus, C.statusPollMs);
  }

  let lastAcked = null;

  function renderStatus(st) {
    if (st && csrf && st.last_acked !== lastAcked) {
      // The cloud acknowledged more: the journal's "waiting" marks change.
      if (lastAcked !== null) loadJournal();
      lastAcked = st.last_acked;
    }
    const link = K.$("chip-link");
    const online = !!(st && st.link && st.link.connected);
    link.textContent = online ? S["d.link.on"] : S["d.link.off"];
    link.className = "chip " + (online ? "good" : "bad");
    link.dataset.online = online ? "1" : "0";
    const outbox = K.$("chip-outbox");
    outbox.textContent = st ? K.fmt(S["d.outbox"], {n: st.outbox_depth}) : "";
    outbox.className = "chip " + (st && st.outbox_depth > 0 ? "warn" : "quiet");
    K.$("chip-fresh").textContent = st && st.age_seconds !== null && st.age_seconds !== undefined
      ? K.fmt(S["d.fresh"], {age: K.age(st.age_seconds, S)}) : S["info.never"];
  }

  // -- check out, check in ------------------------------------------------------------------

  K.$("co-card").addEventListener("keydown", function (ev) {
    // The scanner's Enter after the card moves on to the book, it does not submit.
    if (ev.key === "Enter" && !K.$("co-copy").value) {
      ev.preventDefault();
      K.$("co-copy").focus();
    }
  });

  K.$("checkout-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const card = K.$("co-card").value.trim();
    const copy = K.$("co-copy").value.trim();
    if (!card) { K.$("co-card").focus(); return; }
    if (!copy) { K.$("co-copy").focus(); return; }
    const res = await call("POST", "/api/checkout", {reader: card, copy: copy});
    if (res.ok) {
      const b = res.body;
      say("checkout-msg", true, K.fmt(S["d.ok.checkout"], {
        title: b.title || b.copy, copy: b.copy, card: b.reader, due: K.date(b.due)}));
      afterChange(card);
    } else {
      refuse("checkout-msg", res);
    }
    K.$("co-copy").value = "";
    K.$("co-copy").focus();
  });

  K.$("checkin-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const copy = K.$("ci-copy").value.trim();
    if (!copy) return;
    const res = await call("POST", "/api/return", {copy: copy});
    if (res.ok) {
      // Where the book goes now: what a sorter at this branch is told too (edge/routing.py).
      const route = res.body.route || {kind: "shelf"};
      say("checkin-msg", true, K.fmt(S[res.body.known ? "d.ok.checkin" : "d.ok.checkin_unknown"],
                                     {copy: res.body.copy}),
          K.fmt(S["d.route." + route.kind] || "", {
            to: route.to || "", reader: route.reader_name || route.reader || ""}));
      afterChange(null);
    } else {
      refuse("checkin-msg", res);
    }
    K.$("ci-copy").value = "";
    K.$("ci-copy").focus();
  });

  function afterChange(card) {
    refreshStatus();
    loadJournal();
    loadHolds();
    if (shownCard && (card === null || card === shownCard)) lookup(shownCard, true);
  }

  // -- a reader ------------------------------------------------------------------------------

  K.$("lookup-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const card = K.$("lk-card").value.trim();
    if (card) lookup(card, false);
  });

  async function lookup(card, quiet) {
    const res = await call("GET", "/api/readers/" + encodeURIComponent(card));
    if (!res.ok) {
      K.$("profile").hidden = true;
      shownCard = null;
      refuse("reader-msg", res);
      return;
    }
    if (!quiet) K.clear(K.$("reader-msg"));
    shownCard = card;
    renderProfile(res.body);
    if (!K.$("pay-card").value) K.$("pay-card").value = card;
  }

  function renderProfile(p) {
    K.$("pf-name").textContent = p.name || p.card;
    K.$("pf-card").textContent = p.card;
    K.$("pf-category").textContent = S["d.cat." + p.category] || p.category;
    K.$("pf-open").textContent = String(p.open_loans);
    const owes = K.$("pf-owes");
    owes.textContent = money(p.fees_owed || 0);
    owes.className = p.fees_owed > 0 ? "debt" : "";
    const state = K.$("pf-state");
    state.textContent = p.blocked_reason ? S["r.blocked"] + ": " + p.blocked_reason : S["d.active"];
    state.className = "state " + (p.blocked_reason ? "bad" : "good");
    K.$("pf-asof").textContent = p.as_of ? K.fmt(S["d.as_of"], {t: K.localDateTime(p.as_of)})
      : S["d.as_of_never"];
    const loans = K.$("pf-loans");
    K.clear(loans);
    for (const ln of p.loans) {
      const renew = K.el("button", {type: "button", class: "btn small", text: S["d.renew"]});
      renew.addEventListener("click", function () { renewLoan(ln); });
      loans.append(K.el("tr", {"data-copy": ln.copy},
        K.el("td", {text: ln.title || "—"}), K.el("td", {class: "mono", text: ln.copy}),
        K.el("td", {text: K.date(ln.due)}), K.el("td", {text: String(ln.renewals)}),
        K.el("td", {class: "act"}, renew)));
    }
    if (!p.loans.length) loans.append(emptyRow(5));
    const holds = K.$("pf-holds");
    K.clear(holds);
    for (const h of p.holds) {
      holds.append(K.el("tr", {},
        K.el("td", {text: h.title || "—"}), K.el("td", {class: "mono", text: h.copy || "—"}),
        K.el("td", {text: S["d.hold." + h.status] || h.status}),
        K.el("td", {text: h.expires ? K.date(h.expires) : "—"})));
    }
    if (!p.holds.length) holds.append(emptyRow(4));
    K.$("profile").hidden = false;
  }

  function emptyRow(cols) {
    return K.el("tr", {class: "empty"}, K.el("td", {colspan: cols, text: S["d.none"]}));
  }

  async function renewLoan(ln) {
    const res = await call("POST", "/api/renew", {loan_id: ln.loan_id});
    if (res.ok) {
      say("reader-msg", true, K.fmt(S["d.ok.renew"], {copy: ln.copy, due: K.date(res.body.due)}));
      afterChange(shownCard);
    } else {
      refuse("reader-msg", res);
    }
  }

  // -- holds to hand out ---------------------------------------------------------------------

  K.$("holds-refresh").addEventListener("click", loadHolds);

  async function loadHolds() {
    const res = await call("GET", "/api/holds");
    if (!res.ok) return;
    const body = K.$("holds");
    K.clear(body);
    for (const h of res.body) {
      const give = K.el("button", {type: "button", class: "btn small primary", text: S["d.handout"],
                                   disabled: !h.copy});
      give.addEventListener("click", function () { handOut(h, give); });
      body.append(K.el("tr", {"data-hold": h.hold_id},
        K.el("td", {text: h.title}),
        K.el("td", {}, K.el("span", {text: h.reader_name || ""}), " ",
                 K.el("span", {class: "mono muted", text: h.reader})),
        K.el("td", {class: "mono", text: h.copy || "—"}),
        K.el("td", {}, K.el("span", {class: "pill " + h.status, text: S["d.hold." + h.status] || h.status})),
        K.el("td", {class: "act"}, give)));
    }
    if (!res.body.length) body.append(emptyRow(5));
  }

  async function handOut(h, button) {
    button.disabled = true;
    const res = await call("POST", "/api/holds/" + encodeURIComponent(h.hold_id) + "/pickup");
    if (res.ok) {
      say("holds-msg", true, K.fmt(S["d.ok.handout"], {
        title: res.body.title || h.title, card: res.body.reader, due: K.date(res.body.due)}));
      afterChange(res.body.reader);
    } else {
      refuse("holds-msg", res);
      button.disabled = false;
    }
  }

  // -- a new reader, a payment ---------------------------------------------------------------

  K.$("register-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const args = {card: K.$("rg-card").value.trim(), name: K.$("rg-name").value.trim(),
                  category: K.$("rg-category").value, pin: K.$("rg-pin").value.trim()};
    const res = await call("POST", "/api/readers", args);
    K.$("rg-pin").value = "";
    if (res.ok) {
      say("register-msg", true, K.fmt(S["d.ok.register"], {name: res.body.name, card: res.body.card}));
      K.$("register-form").reset();
      afterChange(null);
    } else {
      refuse("register-msg", res);
    }
  });

  K.$("payment-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const tiyn = tiynOf(K.$("pay-amount").value);
    if (tiyn === null || tiyn <= 0) {
      say("payment-msg", false, S["d.bad.amount"]);
      return;
    }
    const card = K.$("pay-card").value.trim();
    const res = await call("POST", "/api/payments", {reader: card, amount: tiyn,
      kind: K.$("pay-kind").value, description: K.$("pay-desc").value.trim()});
    if (res.ok) {
      say("payment-msg", true, K.fmt(S["d.ok.payment"], {amount: money(res.body.amount), card: card}));
      K.$("pay-amount").value = "";
      K.$("pay-desc").value = "";
      afterChange(card);
    } else {
      refuse("payment-msg", res);
    }
  });

  // -- the journal ---------------------------------------------------------------------------

  async function loadJournal() {
    const res = await call("GET", "/api/desk/journal");
    if (!res.ok) return;
    const list = K.$("journal");
    K.clear(list);
    for (const e of res.body.events) {
      const what = [];
      if (e.title) what.push("«" + e.title + "»");
      if (e.copy) what.push(e.copy);
      if (e.amount) what.push(money(e.amount));
      if (e.name || e.card) what.push("— " + [e.name, e.card].filter(Boolean).join(" "));
      if (e.due) what.push("→ " + K.date(e.due));
      list.append(K.el("li", {class: e.acked ? "sent" : "waiting", "data-seq": e.seq},
        K.el("span", {class: "when mono", text: K.localDateTime(e.ts).slice(11)}),
        K.el("span", {class: "what"}, K.el("b", {text: S["j." + e.type] || e.type}), " " + what.join(" ")),
        K.el("span", {class: "sync", text: e.acked ? S["j.sent"] : S["j.waiting"]})));
    }
  }

  // -- start ---------------------------------------------------------------------------------

  (async function start() {
    pollStatus();
    const res = await call("GET", "/api/session");
    if (res.ok) showWork(res.body);
    else showLogin("");
  })();
})();
