/* "Leave this site quickly": replace this page (so Back does not return to it) with an
   everyday site. The link works without JavaScript; pressing Esc twice does the same. */
(function () {
  "use strict";
  var button = document.querySelector("[data-quick-exit]");
  if (!button) {
    return;
  }
  var target = button.getAttribute("href");
  function leave(event) {
    if (event) {
      event.preventDefault();
    }
    document.body.style.visibility = "hidden";
    document.title = "";
    window.location.replace(target);
  }
  button.addEventListener("click", leave);
  var lastEscape = 0;
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") {
      return;
    }
    var now = Date.now();
    if (now - lastEscape < 1000) {
      leave(event);
    }
    lastEscape = now;
  });
})();
