/* The desk's services page. Every action is a call to this node's JSON API with the staff
   session and its CSRF token (log in at /desk); refusals show the API's reason. Prices are
   the reader's own, with the discount and why; data is set with textContent only. */
"use strict";

(function () {
  const K = window.Kitap;
  const S = JSON.parse(K.$("sv-strings").textContent);
  const C = JSON.parse(K.$("sv-config").textContent);
  K.useZone(C.tz);
  let csrf = null;
  let card = null;
  let openSession = null;

  // -- calls and messages ---------------------------------------------------------------------

  async function call(method, url, body) {
    const headers = method === "GET" ? {} : {"X-CSRF-Token": csrf || ""};
    try {
      const res = await K.api(method, url, body, headers);
      if (res.status === 401) showLogin();
      return res;
    } catch (err) {
      return {status: 0, ok: false, body: {message: S["err.network"]}};
    }
  }

  function say(box, ok, text, detail) {
    const node = K.$(box);
    K.clear(node);
    node.className = "msg " + (ok ? "ok" : "err");
    node.append(K.el("strong", {text: text}));
    if (detail) node.append(K.el("span", {class: "detail", text: detail}));
  }

  function refuse(box, res) {
    const body = res.body || {};
    const code = body.errors && typeof body.errors.refusal === "string" ? body.errors.refusal : null;
    const title = (code && S["r." + code]) || (res.status === 422 ? S["r.invalid"] : S["r.refused"]);
    say(box, false, title, body.message || null);
  }

  function money(tiyn) {
    const whole = Math.floor(Math.abs(tiyn) / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
    const part = Math.abs(tiyn) % 100;
    return (tiyn < 0 ? "−" : "") + whole + (part ? "," + String(part).padStart(2, "0") : "") + " ₸";
  }

  function name(names) {
    return (names && (names[C.lang] || names.en)) || "?";
  }

  /* Why this price, in this page's language. */
  function why(q) {
    if (q.reason !== "price.discount") return S[q.reason] || q.note;
    const a = q.reason_args;
    let who = S["d.cat." + a.category] || S["price.who." + a.category] || a.category;
    if (a.partner) who = K.fmt(S["price.of_partner"], {who: who, partner: a.partner});
    return K.fmt(S["price.discount"], {percent: a.percent, who: who});
  }

  function priceNode(q, base) {
    if (!q) return K.el("span", {class: "price", text: base ? money(base) : S["sv.free"]});
    return K.el("span", {},
      K.el("span", {class: "price"}, q.discount ? K.el("s", {text: money(q.base)}) : null,
           q.amount ? money(q.amount) : S["sv.free"]),
      K.el("span", {class: "why", text: " " + why(q)}));
  }

  function when(iso) {
    return K.localDateTime(iso);
  }

  function seatText(b) {
    if (b.status !== "active") return S["sv.status." + b.status] || b.status;
    return b.seat === "seated" ? S["sv.seat.seated"] : K.fmt(S["sv.seat.waitlisted"], {n: b.position || "?"});
  }

  // -- login, link ----------------------------------------------------------------------------

  function showLogin() {
    csrf = null;
    K.$("work").hidden = true;
    K.$("login").hidden = false;
  }

  async function refreshStatus() {
    let st = null;
    try {
      const res = await K.api("GET", "/api/status");
      if (res.ok) st = res.body;
    } catch (err) { st = null; }
    const link = K.$("chip-link");
    const online = !!(st && st.link && st.link.connected);
    link.textContent = online ? S["d.link.on"] : S["d.link.off"];
    link.className = "chip " + (online ? "good" : "bad");
    link.dataset.online = online ? "1" : "0";
    const outbox = K.$("chip-outbox");
    outbox.textContent = st ? K.fmt(S["d.outbox"], {n: st.outbox_depth}) : "";
    outbox.className = "chip " + (st && st.outbox_depth > 0 ? "warn" : "quiet");
    setTimeout(refreshStatus, 4000);
  }

  // -- sessions -------------------------------------------------------------------------------

  K.$("sv-branch").addEventListener("change", loadSessions);

  async function loadSessions() {
    const q = new URLSearchParams();
    if (card) q.set("reader", card);
    if (K.$("sv-branch").value) q.set("branch", K.$("sv-branch").value);
    const res = await call("GET", "/api/sessions?" + q.toString());
    if (!res.ok) { refuse("sessions-msg", res); return; }
    K.$("sv-pick").hidden = !!card;
    const list = K.$("sessions");
    K.clear(list);
    for (const x of res.body) list.append(sessionRow(x));
    if (!res.body.length) list.append(K.el("li", {class: "empty", text: S["sv.no_sessions"]}));
  }

  function sessionRow(x) {
    const full = x.free <= 0;
    const act = K.el("div", {class: "act"});
    if (card && x.booked) {
      act.append(K.el("span", {class: "pill seated", text: S["sv.booked"]}));
    } else if (card) {
      const paid = x.quote && x.quote.amount > 0;
      const book = K.el("button", {type: "button", class: "btn small primary book",
                                   text: full ? S["sv.waitlist"] : S["sv.book"]});
      book.addEventListener("click", function () { bookSession(x, {waitlist: full, pay: true}); });
      act.append(book);
      if (paid && !full) {
        const later = K.el("button", {type: "button", class: "btn small", text: S["sv.book_unpaid"]});
        later.addEventListener("click", function () { bookSession(x, {waitlist: false, pay: false}); });
        act.append(later);
      }
    }
    const open = K.el("button", {type: "button", class: "link-btn", text: S["sv.roster"]});
    open.addEventListener("click", function () { loadRoster(x.id); });
    act.append(open);
    const seats = K.fmt(S["sv.seats"], {free: Math.max(0, x.free), capacity: x.capacity}) +
      (x.waiting ? " · " + K.fmt(S["sv.waiting_n"], {n: x.waiting}) : "");
    return K.el("li", {class: (full ? "full " : "") + (x.booked ? "booked" : ""), "data-session": x.id},
      K.el("div", {class: "when", text: when(x.starts_at).slice(0, 10)},
           K.el("small", {text: when(x.starts_at).slice(11) + "–" + when(x.ends_at).slice(11)})),
      K.el("div", {class: "what"},
        K.el("span", {class: "kind", text: S["sv.kind." + x.kind] || x.kind}),
        K.el("b", {text: name(x.names)}),
        K.el("span", {class: "sub", text: [x.branch, x.room, x.host].filter(Boolean).join(" · ")}),
        K.el("span", {class: "sub seats", text: seats}),
        K.el("div", {}, priceNode(x.quote, x.price))),
      act);
  }

  async function bookSession(x, opts) {
    const res = await call("POST", "/api/bookings", {reader: card, session: x.id,
      waitlist: opts.waitlist, pay: opts.pay});
    if (!res.ok) { refuse("sessions-msg", res); return; }
    K.clear(K.$("sessions-msg"));
    showReceipt(res.body);
    afterChange();
  }

  // -- the roster -----------------------------------------------------------------------------

  K.$("ro-close").addEventListener("click", function () {
    openSession = null;
    K.$("p-roster").hidden = true;
  });

  async function loadRoster(id) {
    const res = await call("GET", "/api/sessions/" + encodeURIComponent(id));
    if (!res.ok) { refuse("sessions-msg", res); return; }
    openSession = id;
    const x = res.body;
    K.$("ro-title").textContent = name(x.names);
    K.$("ro-when").textContent = when(x.starts_at) + " · " + [x.branch, x.room, x.host].filter(Boolean).join(" · ") +
      " · " + K.fmt(S["sv.seats"], {free: Math.max(0, x.free), capacity: x.capacity});
    const rows = K.$("ro-rows");
    K.clear(rows);
    const mine = x.branch === C.node && new Date(x.starts_at) <= new Date();
    for (const b of x.bookings) rows.append(rosterRow(b, mine));
    if (!x.bookings.length) {
      rows.append(K.el("tr", {class: "empty"}, K.el("td", {colspan: 5, text: S["d.none"]})));
    }
    K.$("p-roster").hidden = false;
  }

  function rosterRow(b, canMark) {
    const btns = K.el("td", {class: "act"});
    if (b.status === "active" && canMark) {
      for (const outcome of ["attended", "no_show"]) {
        const mark = K.el("button", {type: "button", class: "btn small" + (b.attendance === outcome ? " primary" : ""),
                                     text: S["sv." + outcome]});
        mark.addEventListener("click", function () { attend(b, outcome); });
        btns.append(mark);
      }
    }
    if (b.owed > 0) btns.append(payButton(b, "roster-msg"));
    return K.el("tr", {"data-booking": b.id, class: b.status},
      K.el("td", {}, K.el("span", {text: b.name || ""}), " ", K.el("span", {class: "mono muted", text: b.reader})),
      K.el("td", {}, K.el("span", {class: "pill " + (b.status === "active" ? b.seat : b.status), text: seatText(b)}),
           b.confirmed ? null : K.el("span", {class: "unconfirmed", text: " " + S["sv.unconfirmed"]})),
      K.el("td", {text: moneyState(b)}),
      K.el("td", {class: "came", text: b.attendance ? S["sv.att." + b.attendance] : "—"}),
      btns);
  }

  function moneyState(b) {
    if (!b.price) return S["sv.free"];
    if (b.owed > 0) return K.fmt(S["sv.owes"], {amount: money(b.owed)});
    return K.fmt(S["sv.paid"], {amount: money(b.paid)});
  }

  function payButton(b, box) {
    const pay = K.el("button", {type: "button", class: "btn small primary", text: S["sv.take_payment"]});
    pay.addEventListener("click", async function () {
      const res = await call("POST", "/api/bookings/" + encodeURIComponent(b.id) + "/payment");
      if (!res.ok) { refuse(box, res); return; }
      say(box, true, K.fmt(S["sv.ok.paid"], {amount: money(res.body.amount)}));
      afterChange();
    });
    return pay;
  }

  async function attend(b, outcome) {
    const res = await call("POST", "/api/bookings/" + encodeURIComponent(b.id) + "/attendance",
                           {outcome: outcome});
    if (!res.ok) { refuse("roster-msg", res); return; }
    say("roster-msg", true, K.fmt(S["sv.ok.attendance"], {name: b.name || b.reader, what: S["sv.att." + outcome]}));
    afterChange();
  }

  // -- the reader -----------------------------------------------------------------------------

  K.$("reader-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const c = K.$("sv-card").value.trim();
    if (c) lookup(c);
  });

  async function lookup(c) {
    const who = await call("GET", "/api/readers/" + encodeURIComponent(c));
    if (!who.ok) {
      card = null;
      K.$("reader").hidden = true;
      refuse("reader-msg", who);
      loadSessions();
      return;
    }
    card = c;
    K.clear(K.$("reader-msg"));
    const [mine, offers] = await Promise.all([
      call("GET", "/api/readers/" + encodeURIComponent(c) + "/services"),
      call("GET", "/api/services?reader=" + encodeURIComponent(c))]);
    renderReader(who.body, mine.ok ? mine.body : {bookings: [], memberships: []},
                 offers.ok ? offers.body : []);
    loadSessions();
  }

  function renderReader(p, mine, offers) {
    K.$("rd-name").textContent = p.name || p.card;
    K.$("rd-card").textContent = p.card;
    K.$("rd-category").textContent = S["d.cat." + p.category] || p.category;
    const active = mine.memberships.find(function (ms) { return ms.active; });
    const state = K.$("rd-member");
    state.textContent = active ? K.fmt(S["sv.member_until"], {day: K.date(active.ends)}) : S["sv.not_member"];
    state.className = "state " + (active ? "good" : "");
    const list = K.$("rd-bookings");
    K.clear(list);
    for (const b of mine.bookings) list.append(bookingItem(b));
    if (!mine.bookings.length) list.append(K.el("li", {class: "empty", text: S["d.none"]}));
    const ms = K.$("rd-memberships");
    K.clear(ms);
    for (const m of mine.memberships) {
      ms.append(K.el("li", {"data-membership": m.id},
        K.el("span", {}, K.el("b", {text: name(m.names)}), " ",
             K.el("span", {class: "sub", text: K.fmt(S["sv.term"], {starts: K.date(m.starts), ends: K.date(m.ends)})})),
        K.el("span", {class: "pill " + (m.active ? "seated" : "cancelled"), text: m.paid ? money(m.paid) : S["sv.free"]})));
    }
    const sale = K.$("rd-offers");
    K.clear(sale);
    for (const v of offers.filter(function (o) { return o.kind === "membership"; })) {
      const sell = K.el("button", {type: "button", class: "btn small primary sell",
        text: active ? S["sv.renew"] : (v.quote && v.quote.amount === 0 ? S["sv.issue_free"] : S["sv.sell"])});
      sell.addEventListener("click", function () { sellMembership(v); });
      sale.append(K.el("li", {"data-offer": v.id},
        K.el("span", {}, K.el("b", {text: name(v.names)}), " ",
             K.el("span", {class: "sub", text: K.fmt(S["sv.term_days"], {n: v.term_days})}), K.el("br"),
             priceNode(v.quote, v.price)),
        sell));
    }
    K.$("reader").hidden = false;
  }

  function bookingItem(b) {
    const btns = K.el("span", {class: "btns"});
    if (b.status === "active") {
      if (b.owed > 0) btns.append(payButton(b, "reader-msg"));
      const cancel = K.el("button", {type: "button", class: "btn small",
                                     text: b.paid > 0 ? S["sv.cancel_refund"] : S["sv.cancel"]});
      cancel.addEventListener("click", async function () {
        const res = await call("POST", "/api/bookings/" + encodeURIComponent(b.id) + "/cancel",
                               {refund: true});
        if (!res.ok) { refuse("reader-msg", res); return; }
        const refund = res.body.refunded ? K.fmt(S["sv.ok.refund"], {amount: money(res.body.refunded)}) : "";
        say("reader-msg", true, K.fmt(S["sv.ok.cancel"], {refund: refund}));
        afterChange();
      });
      btns.append(cancel);
    }
    return K.el("li", {"data-booking": b.id},
      K.el("span", {}, K.el("b", {text: name(b.names)}), " ",
           K.el("span", {class: "sub", text: when(b.starts_at) + " · " + (b.branch || "")}), K.el("br"),
           K.el("span", {class: "pill " + (b.status === "active" ? b.seat : b.status), text: seatText(b)}),
           " ", K.el("span", {class: "sub", text: moneyState(b)}),
           b.confirmed ? null : K.el("span", {class: "unconfirmed", text: " " + S["sv.unconfirmed"]})),
      btns);
  }

  async function sellMembership(v) {
    const res = await call("POST", "/api/memberships", {reader: card, service: v.id});
    if (!res.ok) { refuse("reader-msg", res); return; }
    showReceipt(res.body);
    afterChange();
  }

  // -- the receipt ----------------------------------------------------------------------------

  function showReceipt(r) {
    const q = r.quote;
    const lines = K.$("rc-lines");
    K.clear(lines);
    function line(label, value, cls) {
      lines.append(K.el("dt", {class: cls || null, text: label}), K.el("dd", {class: cls || null, text: value}));
    }
    line(S["sv.r.reader"], (r.reader_name || "") + " · " + r.reader);
    line(S["sv.r.service"], name(r.names));
    if (r.starts_at) {
      line(S["sv.r.when"], when(r.starts_at));
      line(S["sv.r.where"], [r.branch, r.room, r.host].filter(Boolean).join(" · "));
      line(S["sv.r.place"], seatText(r));
    } else {
      line(S["sv.r.term"], K.fmt(S["sv.term"], {starts: K.date(r.starts), ends: K.date(r.ends)}));
    }
    line(S["sv.r.base"], q.base ? money(q.base) : S["sv.free"]);
    if (q.discount) line(S["sv.r.discount"], "−" + money(q.discount) + " (" + why(q) + ")", "discount");
    else line(S["sv.r.discount"], why(q));
    line(S["sv.r.to_pay"], q.amount ? money(q.amount) : S["sv.free"], "total");
    line(S["sv.r.paid"], money(r.paid || 0));
    if (r.owed) line(S["sv.r.owed"], money(r.owed));
    K.$("rc-number").textContent = (r.id || "").slice(0, 8);
    K.$("rc-note").textContent = r.starts_at ? S["sv.r.cloud_decides"] : "";
    K.$("p-receipt").hidden = false;
  }

  function afterChange() {
    if (card) lookup(card); else loadSessions();
    if (openSession) loadRoster(openSession);
  }

  // -- start ----------------------------------------------------------------------------------

  (async function start() {
    refreshStatus();
    const res = await call("GET", "/api/session");
    if (!res.ok) { showLogin(); return; }
    csrf = res.body.csrf;
    K.$("who-name").textContent = res.body.username;
    K.$("work").hidden = false;
    K.$("sv-card").focus();
    loadSessions();
  })();
})();
