// Live updates for signoff's web queue: the server sends an event when an
// ApprovalRequest the user can see changes; the live region is fetched again
// and swapped in place. A comment being typed and the focus survive the swap.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.src) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.dataset.src, { headers: { "X-Signoff-Fragment": "live" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var comment = document.getElementById("comment");
        var text = comment ? comment.value : null;
        var focused = document.activeElement && document.activeElement.id;
        live.innerHTML = html;
        var fresh = document.getElementById("comment");
        if (fresh && text !== null) fresh.value = text;
        if (focused) { var el = document.getElementById(focused); if (el) el.focus(); }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  if (window.EventSource) {
    var events = new EventSource("/events");
    events.addEventListener("change", refresh);
    events.addEventListener("open", function () { document.body.setAttribute("data-live", "connected"); });
  }
  // Times left move on even when nothing changes.
  setInterval(refresh, 30000);
})();
