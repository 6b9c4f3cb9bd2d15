// doitong-receiver console: the only script (the CSP allows no other, and no inline script).
// Every page works without it; it adds live updates, progress, selection helpers and the
// sign-in link's token. It never builds HTML from data: it swaps in HTML the server rendered
// (and escaped) for the same page, or sets text.
"use strict";

(function () {
  function onReady(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  // The link `receiver run` prints carries the token in the fragment, which browsers never
  // send to the server: fill it in, drop it from the address bar and history, sign in.
  function signInFromFragment() {
    var form = document.querySelector("form[data-login]");
    if (!form || location.hash.indexOf("#token=") !== 0) return;
    var token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search);
    if (!token) return;
    form.querySelector("input[name=token]").value = token;
    form.submit();
  }

  // Parts of a page marked data-live are fetched again every data-interval ms and swapped in.
  function liveRegions() {
    document.querySelectorAll("[data-live]").forEach(function (region) {
      var url = region.getAttribute("data-live");
      var interval = parseInt(region.getAttribute("data-interval"), 10) || 5000;
      var status = document.querySelector("[data-live-status]");
      var busy = false;
      function refresh() {
        // Not while the tab is hidden, nor while focus is inside (a keyboard user would lose it).
        if (busy || document.hidden || region.contains(document.activeElement)) return;
        busy = true;
        fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "console.js" } })
          .then(function (response) {
            if (response.status === 401) {
              location.assign("/console/login?next=" + encodeURIComponent(location.pathname + location.search));
              return null;
            }
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.text();
          })
          .then(function (html) {
            if (html === null) return;
            region.innerHTML = html;
            if (status) status.classList.remove("stale");
          })
          .catch(function () {
            if (status) status.classList.add("stale");
          })
          .finally(function () { busy = false; });
      }
      setInterval(refresh, interval);
      document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
    });
  }

  // A replay's progress page follows the run without reloading.
  function replayProgress() {
    var box = document.querySelector("[data-replay]");
    if (!box) return;
    var url = box.getAttribute("data-replay");
    var bar = box.querySelector("progress");
    var state = box.querySelector("[data-replay-state]");
    var numbers = box.querySelector("[data-replay-numbers]");
    var format = new Intl.NumberFormat("en");
    function poll() {
      fetch(url, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (run) {
          if (!run) return;
          bar.value = run.fraction;
          state.textContent = run.state;
          state.className = "badge rs-" + run.state;
          numbers.textContent = format.format(run.examined) + " of " + format.format(run.total || 0) +
            " gone through, " + format.format(run.queued) + " queued again";
          if (run.state === "running") setTimeout(poll, 700);
          else if (run.state !== "finished") location.reload();
        });
    }
    if (state.textContent.trim() === "running") setTimeout(poll, 300);
  }

  // "Select every row" and a count on the button of forms with checkboxes.
  function selections() {
    document.querySelectorAll("form[data-selection]").forEach(function (form) {
      var all = form.querySelector("[data-select-all]");
      var boxes = form.querySelectorAll("input[name=delivery]");
      var button = form.querySelector("[data-selected-label]");
      function update() {
        var count = 0;
        boxes.forEach(function (box) { if (box.checked) count += 1; });
        if (button) {
          button.textContent = button.getAttribute("data-selected-label") + (count ? " (" + count + ")" : "");
          button.disabled = count === 0;
        }
        if (all) all.checked = count > 0 && count === boxes.length;
      }
      if (all) all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
        update();
      });
      boxes.forEach(function (box) { box.addEventListener("change", update); });
      update();
    });
  }

  // Forms that change something big ask first.
  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        field.select();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, function () {});
        else if (document.execCommand("copy")) done();
      });
    });
  }

  onReady(function () {
    signInFromFragment();
    liveRegions();
    replayProgress();
    selections();
    confirmations();
    copyButtons();
  });
})();
