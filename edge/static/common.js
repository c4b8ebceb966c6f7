/* Helpers shared by the kiosk and the desk pages: DOM building without innerHTML, JSON calls,
   string formatting and dates. No build step, no network beyond this node. */
"use strict";

window.Kitap = (function () {
  function $(id) {
    return document.getElementById(id);
  }

  /* Build an element; children that are strings become text nodes (never parsed as HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "hidden") node.hidden = true;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function fmt(text, params) {
    return String(text).replace(/\{(\w+)\}/g, function (match, key) {
      return params && Object.prototype.hasOwnProperty.call(params, key) ? String(params[key]) : match;
    });
  }

  /* "2026-12-13" -> "13.12.2026", the way dates are written in Kazakhstan. */
  function date(iso) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso || "");
    return m ? m[3] + "." + m[2] + "." + m[1] : (iso || "");
  }

  /* The node's own local time as it wrote it: "2026-11-22T10:32:05+05:00" -> "22.11.2026 10:32". */
  function dateTime(iso) {
    const m = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})/.exec(iso || "");
    return m ? m[3] + "." + m[2] + "." + m[1] + " " + m[4] + ":" + m[5] : (iso || "");
  }

  /* The library's time zone (the page's config names it; the browser's own if unset). */
  let zone;
  function useZone(name) {
    zone = name || undefined;
  }

  /* An instant in the library's time zone: "22.11.2026 15:32". */
  function localDateTime(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return iso || "";
    const p = {};
    try {
      new Intl.DateTimeFormat("en-GB", {timeZone: zone, year: "numeric", month: "2-digit",
        day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23"})
        .formatToParts(d).forEach(function (x) { p[x.type] = x.value; });
    } catch (err) {  /* a zone this browser does not know: its own */
      zone = undefined;
      return localDateTime(iso);
    }
    return p.day + "." + p.month + "." + p.year + " " + p.hour + ":" + p.minute;
  }

  /* Seconds -> "45 s" / "3 min" / "5 h" / "2 d" in the page's language. */
  function age(seconds, S) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return fmt(S["unit.s"], {n: s});
    if (s < 3600) return fmt(S["unit.min"], {n: Math.floor(s / 60)});
    if (s < 172800) return fmt(S["unit.h"], {n: Math.floor(s / 3600)});
    return fmt(S["unit.d"], {n: Math.floor(s / 86400)});
  }

  /* A JSON call to this node; resolves {status, ok, body} for any HTTP answer, rejects only
     when the node cannot be reached. */
  async function api(method, url, body, headers) {
    const opts = {method: method, headers: Object.assign({}, headers || {}),
                  credentials: "same-origin", cache: "no-store"};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const response = await fetch(url, opts);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return {status: response.status, ok: response.ok, body: data};
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  return {$: $, el: el, fmt: fmt, date: date, dateTime: dateTime, localDateTime: localDateTime,
          useZone: useZone, age: age, api: api, clear: clear};
})();
