/* Search every issue in the browser: no server, no requests, works from file://.
   search-index.js defines window.NEWSLETTER_SEARCH; this script filters the list the
   page already shows (without JavaScript the whole list stays, so the page is usable). */
(function () {
  "use strict";
  var index = window.NEWSLETTER_SEARCH;
  var form = document.querySelector(".search-form");
  var input = document.getElementById("q");
  var list = document.getElementById("search-results");
  var status = document.getElementById("search-status");
  if (!index || !form || !input || !list || !status) {
    return;
  }

  function fold(text) {
    return (" " + text + " ").toLowerCase().normalize("NFD")
      .replace(/[\u0300-\u036f]/g, "")
      .replace(/[^\p{L}\p{N}]+/gu, " ");
  }

  var items = {};
  Array.prototype.forEach.call(list.querySelectorAll("li[data-slug]"), function (li) {
    items[li.getAttribute("data-slug")] = li;
  });
  var docs = index.issues.map(function (doc) {
    return { doc: doc, folded: fold(doc.title + " " + doc.text), item: items[doc.slug] };
  });
  var total = docs.length;

  function snippet(doc, word) {
    var text = doc.text;
    var at = fold(text).indexOf(" " + word);
    if (at < 0) {
      return null;
    }
    var start = Math.max(0, at - 60);
    var end = Math.min(text.length, at + 100);
    if (start > 0) {
      start = text.indexOf(" ", start) + 1 || start;
    }
    if (end < text.length) {
      end = text.lastIndexOf(" ", end) > at ? text.lastIndexOf(" ", end) : end;
    }
    var p = document.createElement("p");
    p.className = "issue-card__snippet";
    p.textContent = (start > 0 ? "… " : "") + text.slice(start, end).trim() + (end < text.length ? " …" : "");
    return p;
  }

  function show(query) {
    var words = fold(query).trim().split(" ").filter(Boolean);
    var shown = 0;
    docs.forEach(function (entry) {
      if (!entry.item) {
        return;
      }
      var old = entry.item.querySelector(".issue-card__snippet");
      if (old) {
        old.remove();
      }
      var match = words.every(function (w) { return entry.folded.indexOf(" " + w) >= 0; });
      entry.item.hidden = !match;
      if (match) {
        shown += 1;
        if (words.length) {
          var p = snippet(entry.doc, words[0]);
          if (p) {
            entry.item.appendChild(p);
          }
        }
      }
    });
    if (!words.length) {
      status.textContent = "All " + total + " issues are listed below.";
    } else if (shown === 0) {
      status.textContent = "No issue contains \u201c" + query.trim() + "\u201d.";
    } else {
      status.textContent = (shown === 1 ? "1 issue contains" : shown + " issues contain") +
        " \u201c" + query.trim() + "\u201d.";
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    show(input.value);
  });
  input.addEventListener("input", function () { show(input.value); });

  var initial = new URLSearchParams(window.location.search).get("q");
  if (initial) {
    input.value = initial;
  }
  show(input.value);
})();
