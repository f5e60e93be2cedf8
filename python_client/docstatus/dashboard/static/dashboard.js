// Live updates: one EventSource per page. When an event concerns what the page shows, the
// page's content is fetched again (?partial=1) and swapped in, at most every 300 ms. The
// browser reconnects by itself and sends Last-Event-ID, so it resumes without gaps.
"use strict";
(function () {
  const main = document.getElementById("live");
  const badge = document.getElementById("live-status");
  if (!main || main.dataset.live !== "on" || !window.EventSource) {
    if (badge) badge.textContent = "";
    return;
  }
  const only = main.dataset.document ? Number(main.dataset.document) : null;
  let pending = null;
  let fetching = false;

  function refresh() {
    pending = null;
    if (fetching) { pending = setTimeout(refresh, 300); return; }
    fetching = true;
    let covers = "";
    fetch(main.dataset.refresh, {headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (response) {
        covers = response.headers.get("X-Docstatus-Cursor") || "";
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) main.innerHTML = html;
        // A shared read older than the last event seen: ask again shortly.
        if (later(main.dataset.lastEvent, covers) && pending === null) pending = setTimeout(refresh, 1000);
      })
      .finally(function () { fetching = false; });
  }

  // Cursors are "tx_id:event_id"; compared as pairs of integers.
  function later(a, b) {
    if (!a || !b) return false;
    const x = a.split(":").map(BigInt), y = b.split(":").map(BigInt);
    return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
  }

  const after = main.dataset.cursor ? "?after=" + encodeURIComponent(main.dataset.cursor) : "";
  const source = new EventSource("/events" + after);
  source.addEventListener("open", function () { badge.textContent = "live"; badge.className = "live-status on"; });
  source.addEventListener("error", function () { badge.textContent = "reconnecting…"; badge.className = "live-status off"; });
  source.addEventListener("reset", function () { window.location.reload(); });
  source.addEventListener("status", function (message) {
    const event = JSON.parse(message.data);
    if (only !== null && event.document_id !== only) return;
    main.dataset.lastEvent = message.lastEventId;
    if (pending === null) pending = setTimeout(refresh, 300);
  });
})();
