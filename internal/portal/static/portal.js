// phr portal: progressive enhancement only; every page works without it
// except the upload progress bar, which needs it.
"use strict";
(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }

  // A strong, typable passphrase: 6 groups of 5 lowercase letters and digits
  // (about 155 bits), from the browser's CSPRNG.
  function passphrase() {
    var abc = "abcdefghijkmnopqrstuvwxyz23456789", out = [];
    var buf = new Uint32Array(30);
    crypto.getRandomValues(buf);
    for (var i = 0; i < 30; i++) {
      if (i && i % 5 === 0) out.push("-");
      out.push(abc[buf[i] % abc.length]);
    }
    return out.join("");
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
    var gen = $("#gen-pass");
    if (gen) gen.addEventListener("click", function () { $("#passphrase").value = passphrase(); $("#passphrase").select(); });
  });
})();
