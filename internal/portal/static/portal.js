// phr portal: progressive enhancement only; every page works without it.
"use strict";
(function () {
  // Move focus to the main heading after navigation for screen readers.
  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form[data-confirm]");
    forms.forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  });
})();
