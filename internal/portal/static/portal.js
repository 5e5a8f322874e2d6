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

  var TYPES = { phr: "application/x-ndjson", ndjson: "application/x-ndjson", jsonl: "application/x-ndjson",
    json: "application/fhir+json", sphr: "application/zip", zip: "application/zip",
    "smart-health-card": "application/smart-health-card" };

  function ext(name) { var i = name.lastIndexOf("."); return i < 0 ? "" : name.slice(i + 1).toLowerCase(); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // Upload with a progress bar: the file goes as the raw request body
  // (streamed, never held whole by the server), and the importer's
  // per-line NDJSON report is shown as it arrives.
  // Reload the import history table after an import.
  function refreshHistory() {
    var old = $("#import-history");
    if (!old) return;
    fetch(location.pathname, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (t) {
      var fresh = new DOMParser().parseFromString(t, "text/html").querySelector("#import-history");
      if (fresh) old.replaceWith(document.importNode(fresh, true));
    }).catch(function () { /* the table stays as it was */ });
  }

  function setupImport(form) {
    var file = $("#file"), pass = $("#import-pass");
    file.addEventListener("change", function () {
      var x = file.files[0] ? ext(file.files[0].name) : "";
      pass.hidden = !(x === "sphr" || x === "zip");
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var f = file.files[0];
      if (!f) return;
      var type = TYPES[ext(f.name)] || "application/octet-stream";
      var q = new URLSearchParams({ filename: f.name });
      var src = $("#source").value.trim();
      if (src) q.set("source", src);
      if ($("#validate").checked) q.set("mode", "validate");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("action") + "?" + q.toString());
      xhr.setRequestHeader("Content-Type", type);
      xhr.setRequestHeader("Accept", "application/x-ndjson");
      xhr.setRequestHeader("X-CSRF-Token", form.getAttribute("data-csrf"));
      var pp = $("#import-passphrase").value;
      if (pp && !pass.hidden) xhr.setRequestHeader("X-PHR-Passphrase", pp);
      var bar = $("#upload-bar"), status = $("#import-status"), lines = $("#import-lines"), sum = $("#import-summary tbody");
      $("#import-progress").hidden = false;
      $("#import-report").hidden = false;
      lines.textContent = ""; sum.textContent = "";
      // The status of the previous upload goes (a page or a test that
      // waits for #import-status.ok would otherwise see it at once).
      bar.value = 0; status.className = ""; status.textContent = "Uploading " + f.name + "…";
      $("#import-go").disabled = true;
      var seen = 0, problems = 0;
      function consume(final) {
        var text = xhr.responseText, nl;
        while ((nl = text.indexOf("\n", seen)) >= 0 || (final && seen < text.length)) {
          var line = nl >= 0 ? text.slice(seen, nl) : text.slice(seen);
          seen = nl >= 0 ? nl + 1 : text.length;
          if (!line.trim()) continue;
          var doc;
          try { doc = JSON.parse(line); } catch (err) { lines.appendChild(el("li", line, "error")); continue; }
          if (doc.resourceType === "OperationOutcome") {
            (doc.issue || []).forEach(function (is) {
              problems++;
              var li = el("li", null, is.severity === "information" ? "" : "problem");
              li.appendChild(el("span", is.severity, "badge"));
              var where = (is.location || []).concat(is.expression || []).join(", ");
              if (where) li.appendChild(el("span", where, "code"));
              li.appendChild(el("span", is.diagnostics || (is.details && is.details.text) || is.code));
              lines.appendChild(li);
            });
          } else if (doc.resourceType === "Parameters") {
            (doc.parameter || []).forEach(function (p) {
              var v = p.valueInteger != null ? p.valueInteger : p.valueDecimal != null ? p.valueDecimal : p.valueCode || p.valueUri || p.valueString;
              if (v == null) return;
              if (p.name === "source" && String(v).indexOf("urn:phr:source:") === 0) {
                try { v = decodeURIComponent(String(v).slice(15)); } catch (err) { /* keep it as it is */ }
              }
              var tr = el("tr");
              tr.appendChild(el("th", p.name)); tr.appendChild(el("td", String(v)));
              tr.setAttribute("data-name", p.name);
              sum.appendChild(tr);
            });
          }
        }
      }
      xhr.upload.onprogress = function (ev) {
        if (ev.lengthComputable) bar.value = Math.round(100 * ev.loaded / ev.total);
      };
      xhr.upload.onload = function () { bar.value = 100; status.textContent = "Uploaded; importing…"; };
      xhr.onprogress = function () { consume(false); };
      xhr.onload = function () {
        $("#import-go").disabled = false;
        var ct = xhr.getResponseHeader("Content-Type") || "";
        if (xhr.status >= 400 && ct.indexOf("ndjson") < 0) {
          var msg = "The import failed (" + xhr.status + ")";
          try {
            var oo = JSON.parse(xhr.responseText);
            msg += ": " + (oo.issue || []).map(function (i) { return i.diagnostics; }).join("; ");
          } catch (err) {
            var d = new DOMParser().parseFromString(xhr.responseText, "text/html").querySelector(".error");
            if (d) msg += ": " + d.textContent;
          }
          status.textContent = msg; status.className = "error";
          return;
        }
        consume(true);
        refreshHistory();
        // The response is complete, so the upload is too: the upload's own
        // load event may not have been dispatched yet for a small body.
        bar.value = 100;
        status.className = "ok";
        status.textContent = "Done: " + problems + " problem" + (problems === 1 ? "" : "s") + " reported.";
      };
      xhr.onerror = function () { $("#import-go").disabled = false; status.className = "error"; status.textContent = "The upload failed (network error)."; };
      xhr.send(f);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
    var imp = $("#import-form");
    if (imp) setupImport(imp);
    var gen = $("#gen-pass");
    if (gen) gen.addEventListener("click", function () { $("#passphrase").value = passphrase(); $("#passphrase").select(); });
  });
})();
