// The console's few scripts: a part of the page that refreshes itself, confirmations, and the
// MARC upload with its progress. Everything works without them, only less comfortably.
"use strict";

(function () {
  function stamp() {
    var d = new Date();
    return [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map(function (n) { return String(n).padStart(2, "0"); }).join(":");
  }

  // <div data-refresh="URL" data-every="ms">: its HTML is fetched again while the tab is shown.
  function live(box) {
    var url = box.dataset.refresh;
    var every = parseInt(box.dataset.every || "5000", 10);
    var updated = document.getElementById("updated");
    var stale = document.getElementById("stale");
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          if (r.redirected || !r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          box.innerHTML = html;
          if (updated) updated.textContent = updated.dataset.label + " " + stamp();
          if (stale) stale.hidden = true;
        })
        .catch(function () { if (stale) stale.hidden = false; })
        .finally(function () { busy = false; });
    }
    if (updated) updated.textContent = updated.dataset.label + " " + stamp();
    setInterval(tick, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) tick(); });
  }

  // <form data-confirm="question">: ask before sending.
  function confirmations() {
    document.addEventListener("submit", function (ev) {
      var q = ev.target.dataset && ev.target.dataset.confirm;
      if (q && !window.confirm(q)) ev.preventDefault();
    });
  }

  function showJob(view, bar, pct, label, detail) {
    bar.value = view.percent;
    pct.textContent = view.percent + "%";
    detail.textContent = detail.dataset.records + ": " + view.records;
    if (view.status === "done") label.textContent = label.dataset.done;
    else if (view.status === "failed" || view.status === "stalled") label.textContent = label.dataset.failed;
    else label.textContent = label.dataset.import;
  }

  function poll(url, onView) {
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (view) {
      onView(view);
      if (view.status === "running") setTimeout(function () { poll(url, onView); }, 700);
    }).catch(function () { setTimeout(function () { poll(url, onView); }, 2000); });
  }

  // The MARC form: upload with a progress bar, then follow the import's own progress.
  function marcUpload(form) {
    var box = document.getElementById("upload-box");
    var bar = document.getElementById("upload-bar");
    var pct = document.getElementById("upload-pct");
    var label = document.getElementById("upload-label");
    var detail = document.getElementById("upload-detail");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action || window.location.href);
      xhr.setRequestHeader("Accept", "application/json");
      box.hidden = false;
      label.textContent = label.dataset.upload;
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        var p = Math.round(100 * e.loaded / e.total);
        bar.value = p;
        pct.textContent = p + "%";
      };
      xhr.onload = function () {
        if (xhr.status !== 202) { label.textContent = label.dataset.failed; return; }
        var view = JSON.parse(xhr.responseText);
        var url = form.dataset.jobUrl.replace(/\/0$/, "/" + view.id) + "?format=json";
        bar.value = 0;
        poll(url, function (v) { showJob(v, bar, pct, label, detail); });
      };
      xhr.onerror = function () { label.textContent = label.dataset.failed; };
      xhr.send(new FormData(form));
    });
  }

  // An import's own page follows it until it ends.
  function jobPage(box) {
    var bar = document.getElementById("job-bar");
    var pct = document.getElementById("job-pct");
    var status = document.getElementById("job-status");
    var records = document.getElementById("job-records");
    poll(box.dataset.poll, function (v) {
      bar.value = v.percent;
      pct.textContent = v.percent + "%";
      records.textContent = records.dataset.records + ": " + v.records;
      if (v.status === "done") status.textContent = status.dataset.done;
      if (v.status === "failed" || v.status === "stalled") status.textContent = status.dataset.failed;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(live);
    confirmations();
    var form = document.getElementById("marc-form");
    if (form) marcUpload(form);
    var job = document.getElementById("job");
    if (job && job.dataset.poll) jobPage(job);
  });
})();
