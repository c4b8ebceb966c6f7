/* The machine's touch screen. The node is the truth about the card in the reader and the PIN;
   this page follows it (a poll twice a second) and drives the choose -> dispense -> receipt
   steps. Everything shown from the node is set with textContent. */
"use strict";

(function () {
  const K = window.Kitap;
  const S = JSON.parse(K.$("kiosk-strings").textContent);
  const C = JSON.parse(K.$("kiosk-config").textContent);
  K.useZone(C.tz);
  const VISIT_SCREENS = new Set(["pin", "books", "confirm", "dispensing", "receipt", "problem",
                                 "locked", "unknown_card", "no_pin"]);
  const READY_SCREENS = new Set(["books", "confirm", "dispensing", "receipt", "problem"]);
  const ATTENDED = new Set(["pin", "books", "confirm", "problem"]);  // the reader was mid-way
  const FAULTS = new Set(["jam", "empty_slot", "not_taken", "outcome_unknown", "machine_error"]);
  // Why the machine cannot lend (the node's "reason"): each has a screen of its own.
  const OUT_OF_ORDER = new Set(["offline", "service", "settling"]);
  const PIN_MAX = 8;
  const PIN_MIN = 4;
  const ENDED_MS = 6000;
  const IDLE_WARN_S = 15;
  const TOUCH_EVERY_MS = 3000;

  let screen = "idle";
  let busy = false;          // a call that moves the screen is under way: polls only watch
  let pin = "";
  let chosen = null;
  let receiptTimer = null;
  let endedTimer = null;
  let lastTouch = 0;

  function show(name) {
    for (const section of document.querySelectorAll("[data-screen]")) {
      section.hidden = section.dataset.screen !== name;
    }
    screen = name;
    document.body.dataset.view = name;
    K.$("screens").scrollTop = 0;
  }

  function stopTimers() {
    clearInterval(receiptTimer);
    clearTimeout(endedTimer);
    receiptTimer = endedTimer = null;
  }

  function goIdle() {
    stopTimers();
    pin = "";
    chosen = null;
    K.$("idle-warning").hidden = true;
    if (screen !== "idle" && C.lang !== C.defaultLang) {
      // The next person at the machine starts in the machine's own language.
      window.location.replace("/kiosk?lang=" + encodeURIComponent(C.defaultLang));
      return;
    }
    show("idle");
  }

  async function end(reason) {
    stopTimers();
    try {
      await K.api("POST", "/api/kiosk/end", {reason: reason || "done"});
    } catch (err) { /* the poll will notice what the node thinks */ }
    goIdle();
  }

  // -- the staff corner and the idle warning -------------------------------------------------

  function renderInfo(info) {
    if (!info) return;
    const parts = [info.node, info.online ? S["info.online"] : S["info.offline"]];
    parts.push(info.age_seconds === null || info.age_seconds === undefined
      ? S["info.never"] : K.fmt(S["info.data"], {age: K.age(info.age_seconds, S)}));
    K.$("staff-info").textContent = parts.join(" · ");
    K.$("staff-info").classList.toggle("offline", !info.online);
  }

  function renderIdleWarning(st) {
    const box = K.$("idle-warning");
    const left = st.idle_left;
    if (typeof left === "number" && left <= IDLE_WARN_S && screen !== "dispensing") {
      box.textContent = K.fmt(S["k.idlewarn"], {n: left});
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  function touched() {
    K.$("idle-warning").hidden = true;
    if (!VISIT_SCREENS.has(screen) || Date.now() - lastTouch < TOUCH_EVERY_MS) return;
    lastTouch = Date.now();
    K.api("POST", "/api/kiosk/touch", {}).catch(function () {});
  }

  // -- following the node --------------------------------------------------------------------

  async function poll() {
    try {
      const res = await K.api("GET", "/api/kiosk/session");
      if (res.ok && res.body) {
        renderInfo(res.body.info);
        if (!busy) apply(res.body);
      }
    } catch (err) { /* the node is restarting: keep the screen, ask again */ }
    setTimeout(poll, C.pollMs);
  }

  function apply(st) {
    switch (st.state) {
      case "no_machine":
        if (screen !== st.state) { stopTimers(); show(st.state); }
        return;
      case "out_of_order": {
        const name = OUT_OF_ORDER.has(st.reason) ? st.reason : "offline";
        for (const p of document.querySelectorAll(".oos-returns")) {
          p.textContent = st.returns_open ? S["k.oos.returns_open"] : S["k.return.closed"];
        }
        if (screen !== name) { stopTimers(); K.$("idle-warning").hidden = true; show(name); }
        return;
      }
      case "idle":
        K.$("idle-warning").hidden = true;
        if (screen === "ended") return;
        if (ATTENDED.has(screen) && st.ended !== "done") { showEnded(); return; }
        if (screen !== "idle") goIdle();
        setReturns(st.returns_open);
        return;
      case "unknown_card":
      case "no_pin":
        if (screen !== st.state) show(st.state);
        return;
      case "locked":
        K.$("locked-text").textContent = K.fmt(S["k.locked.text"], {m: st.minutes});
        if (screen !== "locked") show("locked");
        return;
      case "pin":
        if (screen !== "pin") startPin(st);
        renderIdleWarning(st);
        return;
      case "ready":
        if (!READY_SCREENS.has(screen)) loadBooks();
        renderIdleWarning(st);
        return;
      default:
        return;
    }
  }

  function setReturns(open) {
    const closed = open === false;
    K.$("returns-box").classList.toggle("closed", closed);
    K.$("returns-text").textContent = closed ? S["k.return.closed"] : S["k.return.text"];
  }

  function showEnded() {
    stopTimers();
    show("ended");
    endedTimer = setTimeout(goIdle, ENDED_MS);
  }

  // -- PIN -----------------------------------------------------------------------------------

  function startPin(st) {
    stopTimers();
    pin = "";
    K.$("pin-card").textContent = K.fmt(S["k.pin.card"], {card: st.card_hint || ""});
    K.$("pin-error").hidden = true;
    renderDots();
    show("pin");
  }

  function renderDots() {
    const dots = K.$("pin-dots");
    K.clear(dots);
    const slots = Math.max(PIN_MIN, pin.length);
    for (let i = 0; i < slots; i++) {
      dots.append(K.el("span", {class: i < pin.length ? "dot full" : "dot"}));
    }
    document.querySelector('[data-key="ok"]').disabled = pin.length < PIN_MIN || busy;
  }

  function pressDigit(d) {
    if (pin.length < PIN_MAX) pin += d;
    renderDots();
  }

  function backspace() {
    pin = pin.slice(0, -1);
    renderDots();
  }

  async function submitPin() {
    if (pin.length < PIN_MIN || busy) return;
    busy = true;
    const typed = pin;
    pin = "";
    renderDots();
    try {
      const res = await K.api("POST", "/api/kiosk/pin", {pin: typed});
      const code = res.body && res.body.code;
      if (res.ok) {
        busy = false;
        await loadBooks();
        return;
      }
      if (code === "wrong_pin") {
        const err = K.$("pin-error");
        err.textContent = K.fmt(S["k.pin.wrong"], {n: res.body.params.attempts_left});
        err.hidden = false;
      } else if (code === "pin_locked") {
        const minutes = (res.body.params && res.body.params.minutes) || 15;
        K.$("locked-text").textContent = K.fmt(S["k.locked.text"], {m: minutes});
        show("locked");
      } else if (code === "unknown_reader") {
        show("unknown_card");
      } else if (code === "no_card") {
        goIdle();
      } else {
        showProblem(res.body || {code: "machine_error"}, false);
      }
    } catch (err) {
      showProblem({code: "network"}, false);
    } finally {
      busy = false;
      renderDots();
    }
  }

  // -- the books -----------------------------------------------------------------------------

  // Quiet cover colours, picked by the title's id: a shelf, not a rainbow.
  const COVERS = ["#0f4c5c", "#7a3e48", "#3d5a80", "#5b6b3a", "#9c6644", "#5f3d6e", "#2a6f4f",
                  "#8a5a14", "#46545e", "#a23b2a"];

  function coverFor(book, big) {
    // The title's first letter on a colour from its id (FNV-1a, so near ids differ).
    let hash = 2166136261;
    const key = book.title_id || book.copy;
    for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619) >>> 0;
    const cover = K.el("div", {class: big ? "cover big" : "cover", "aria-hidden": "true"},
      K.el("span", {text: (book.title || "?").trim().charAt(0).toUpperCase()}));
    cover.style.setProperty("--cover", COVERS[hash % COVERS.length]);
    return cover;
  }

  async function loadBooks() {
    busy = true;
    stopTimers();
    K.clear(K.$("books"));
    K.$("books-empty").hidden = true;
    K.$("books-count").textContent = S["k.books.loading"];
    show("books");
    try {
      const res = await K.api("GET", "/api/kiosk/books");
      if (res.status === 403) { goIdle(); return; }
      if (!res.ok || !res.body) { showProblem({code: "machine_error"}, false); return; }
      if (res.body.refusal) { showProblem(res.body.refusal, false); return; }
      renderBooks(res.body);
    } catch (err) {
      showProblem({code: "network"}, false);
    } finally {
      busy = false;
    }
  }

  function renderBooks(data) {
    const name = (data.name || "").trim();
    K.$("books-hello").textContent = K.fmt(S["k.books.hello"], {name: name || "…"});
    K.$("books-count").textContent = K.fmt(S["k.books.count"], {n: data.loans, max: data.max});
    const list = K.$("books");
    K.clear(list);
    for (const book of data.books) {
      const meta = K.el("div", {class: "meta"},
        K.el("p", {class: "book-title", text: book.title}),
        K.el("p", {class: "book-author", text: book.author || ""}),
        book.reserved ? K.el("span", {class: "badge", text: S["k.books.reserved"]})
          : (book.count > 1 ? K.el("span", {class: "count", text: K.fmt(S["k.books.copies"], {n: book.count})}) : null));
      const button = K.el("button", {type: "button", class: book.reserved ? "book reserved" : "book",
                                     "data-copy": book.copy}, coverFor(book, false), meta);
      button.addEventListener("click", function () { choose(book); });
      list.append(K.el("li", {}, button));
    }
    K.$("books-empty").hidden = data.books.length > 0;
  }

  function choose(book) {
    chosen = book;
    const slot = K.$("confirm-cover");
    slot.replaceWith(Object.assign(coverFor(book, true), {id: "confirm-cover"}));
    K.$("confirm-title").textContent = book.title;
    K.$("confirm-author").textContent = book.author || "";
    K.$("confirm-reserved").hidden = !book.reserved;
    show("confirm");
  }

  async function take() {
    if (!chosen || busy) return;
    busy = true;
    K.$("dispense-book").textContent = chosen.title;
    show("dispensing");
    try {
      const res = await K.api("POST", "/api/kiosk/checkout", {copy: chosen.copy});
      if (res.ok) showReceipt(res.body);
      else if (res.status === 403) goIdle();
      else showProblem(res.body || {code: "machine_error"}, true);
    } catch (err) {
      showProblem({code: "outcome_unknown"}, false);
    } finally {
      busy = false;
    }
  }

  function showReceipt(r) {
    K.$("r-title").textContent = r.author ? r.title + " — " + r.author : r.title;
    K.$("r-copy").textContent = r.copy;
    K.$("r-due").textContent = K.date(r.due);
    K.$("r-reader").textContent = r.reader ? r.reader + " (" + r.card_hint + ")" : r.card_hint;
    K.$("r-node").textContent = r.node;
    K.$("r-time").textContent = K.dateTime(r.time);
    show("receipt");
    let left = C.receiptSeconds;
    const closing = K.$("receipt-closing");
    closing.textContent = K.fmt(S["k.receipt.closing"], {n: left});
    receiptTimer = setInterval(function () {
      left -= 1;
      closing.textContent = K.fmt(S["k.receipt.closing"], {n: Math.max(0, left)});
      if (left <= 0) end("done");
    }, 1000);
  }

  // -- refusals and faults -------------------------------------------------------------------

  function showProblem(p, canChoose) {
    const code = p.code || "machine_error";
    if (code === "machine_offline") { show("offline"); return; }
    if (code === "service") { show("service"); return; }
    if (code === "no_card" || code === "pin_required") { goIdle(); return; }
    const params = p.params || {};
    let title = S["r." + code] || S["r.refused"];
    let text = S["k.t." + code] ? K.fmt(S["k.t." + code], params) : "";
    if (code === "network") { title = S["r.refused"]; text = S["err.network"]; }
    if (!text && !canChoose) text = S["k.t.generic"];
    K.$("problem-title").textContent = title;
    K.$("problem-text").textContent = text;
    K.$("problem-more").textContent = FAULTS.has(code) ? S["k.fault.askstaff"] : "";
    const icon = K.$("problem-icon");
    icon.className = "icon-circle " + (FAULTS.has(code) ? "warn" : "bad");
    K.$("problem-choose").hidden = !canChoose;
    document.body.dataset.problem = code;
    show("problem");
  }

  // -- wiring --------------------------------------------------------------------------------

  document.addEventListener("click", function (ev) {
    const target = ev.target.closest("[data-action], [data-digit], [data-key]");
    if (!target) return;
    if (target.dataset.digit) pressDigit(target.dataset.digit);
    else if (target.dataset.key === "clear") backspace();
    else if (target.dataset.key === "ok") submitPin();
    else if (target.dataset.action === "end") end("done");
    else if (target.dataset.action === "books") loadBooks();
  });
  document.addEventListener("pointerdown", touched, {passive: true});
  document.addEventListener("keydown", function (ev) {
    // A hardware keypad under the screen (or a technician's keyboard) types like the pad.
    if (screen !== "pin") return;
    if (/^[0-9]$/.test(ev.key)) pressDigit(ev.key);
    else if (ev.key === "Backspace") backspace();
    else if (ev.key === "Enter") submitPin();
    else return;
    ev.preventDefault();
    touched();
  });
  K.$("confirm-take").addEventListener("click", take);

  show("idle");
  poll();
})();
