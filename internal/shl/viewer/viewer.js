"use strict";
// The SMART Health Link viewer: everything happens in this page. The link
// (after "#", never sent to a server) gives the manifest URL and the key;
// files are decrypted here with WebCrypto and shown as tables.
(function () {
  const $ = (id) => document.getElementById(id);
  const status = (msg, isError) => {
    $("status").textContent = msg;
    $("status").className = isError ? "error" : "";
  };

  function b64urlToBytes(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  const utf8 = new TextDecoder();

  function parseLink(hash) {
    let h = hash.replace(/^#/, "");
    try { h = decodeURIComponent(h); } catch (e) { /* keep as is */ }
    const i = h.indexOf("shlink:/");
    if (i < 0) throw new Error("the address has no shlink:/ link after #");
    const p = JSON.parse(utf8.decode(b64urlToBytes(h.slice(i + 8))));
    if (typeof p.url !== "string" || typeof p.key !== "string") throw new Error("the link has no url or key");
    return p;
  }

  async function inflateRaw(bytes) {
    const ds = new DecompressionStream("deflate-raw");
    const stream = new Blob([bytes]).stream().pipeThrough(ds);
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function decrypt(jwe, keyBytes) {
    const parts = jwe.trim().split(".");
    if (parts.length !== 5) throw new Error("a file is not a compact JWE");
    const header = JSON.parse(utf8.decode(b64urlToBytes(parts[0])));
    if (header.alg !== "dir" || header.enc !== "A256GCM") throw new Error("unsupported JWE " + header.alg + "/" + header.enc);
    const key = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["decrypt"]);
    const ct = b64urlToBytes(parts[3]);
    const tag = b64urlToBytes(parts[4]);
    const data = new Uint8Array(ct.length + tag.length);
    data.set(ct); data.set(tag, ct.length);
    let plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: b64urlToBytes(parts[2]), additionalData: new TextEncoder().encode(parts[0]), tagLength: 128 },
      key, data));
    if (header.zip === "DEF") plain = await inflateRaw(plain);
    return { header, text: utf8.decode(plain) };
  }

  // --- rendering (textContent only: shared data never becomes markup) ---
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function concept(c) {
    if (!c) return "";
    if (c.text) return c.text;
    for (const cd of c.coding || []) if (cd.display) return cd.display;
    for (const cd of c.coding || []) if (cd.code) return cd.code;
    return "";
  }
  function refText(r) { return r ? (r.display || r.reference || "") : ""; }
  function quantity(q) { return q ? [q.value, q.unit || q.code].filter((x) => x !== undefined).join(" ") : ""; }
  function value(o) {
    if (o.valueQuantity) return quantity(o.valueQuantity);
    if (o.valueCodeableConcept) return concept(o.valueCodeableConcept);
    for (const k of ["valueString", "valueBoolean", "valueInteger", "valueDateTime"]) if (o[k] !== undefined) return String(o[k]);
    if (o.component) return o.component.map((c) => concept(c.code) + ": " + value(c)).join("; ");
    return "";
  }
  function date(r, ...names) {
    for (const n of names) {
      if (!r[n]) continue;
      const d = typeof r[n] === "string" ? r[n] : (r[n].start || "");
      return d.replace(/T(\d\d:\d\d).*$/, " $1");
    }
    return "";
  }
  function humanName(p) {
    const n = (p.name || [])[0];
    if (!n) return "(no name)";
    if (n.text) return n.text;
    const given = Array.isArray(n.given) ? n.given.join(" ") : (n.given || "");
    return [n.prefix && n.prefix.join(" "), given, n.family].filter(Boolean).join(" ");
  }

  function table(id, title, rows, cols) {
    const sec = el("section"); sec.id = id;
    sec.appendChild(el("h2", title + " (" + rows.length + ")"));
    if (!rows.length) { sec.appendChild(el("div", "None shared.", "muted")); return sec; }
    const t = el("table"); const tr = el("tr");
    for (const c of cols) tr.appendChild(el("th", c[0]));
    t.appendChild(tr);
    for (const r of rows) {
      const row = el("tr");
      for (const c of cols) { const v = c[1](r); const td = el("td", v.text !== undefined ? v.text : v); if (v.cls) td.className = v.cls; row.appendChild(td); }
      t.appendChild(row);
    }
    sec.appendChild(t);
    return sec;
  }

  function render(resources, into) {
    const by = {};
    for (const r of resources) (by[r.resourceType] = by[r.resourceType] || []).push(r);
    const get = (...types) => types.flatMap((t) => by[t] || []);
    const byRef = {};
    for (const r of resources) if (r.id) byRef[r.resourceType + "/" + r.id] = r;
    const medication = (r) => {
      if (r.medicationCodeableConcept) return concept(r.medicationCodeableConcept);
      const m = r.medicationReference && byRef[r.medicationReference.reference];
      return (m && concept(m.code)) || refText(r.medicationReference);
    };
    for (const p of get("Patient")) {
      const sec = el("section"); sec.id = "patient";
      sec.appendChild(el("h2", "Patient"));
      sec.appendChild(el("div", humanName(p), "name"));
      sec.appendChild(el("div", [p.gender, p.birthDate && "born " + p.birthDate].filter(Boolean).join(", "), "muted"));
      into.appendChild(sec);
    }
    into.appendChild(table("allergies", "Allergies and intolerances", get("AllergyIntolerance"), [
      ["Substance", (r) => concept(r.code)],
      ["Criticality", (r) => ({ text: r.criticality || "", cls: r.criticality === "high" ? "crit" : "" })],
      ["Reaction", (r) => (r.reaction || []).map((x) => (x.manifestation || []).map(concept).join(", ")).join("; ")],
      ["Status", (r) => concept(r.clinicalStatus)],
      ["Since", (r) => date(r, "onsetDateTime", "recordedDate")],
    ]));
    into.appendChild(table("medications", "Medications", get("MedicationRequest", "MedicationStatement"), [
      ["Medication", medication],
      ["Dosage", (r) => (r.dosageInstruction || r.dosage || []).map((d) => d.text || "").filter(Boolean).join("; ")],
      ["Status", (r) => r.status || ""],
      ["Date", (r) => date(r, "authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted")],
    ]));
    into.appendChild(table("conditions", "Conditions", get("Condition"), [
      ["Condition", (r) => concept(r.code)],
      ["Status", (r) => concept(r.clinicalStatus)],
      ["Onset", (r) => date(r, "onsetDateTime", "onsetPeriod", "recordedDate")],
    ]));
    into.appendChild(table("immunizations", "Immunizations", get("Immunization"), [
      ["Vaccine", (r) => concept(r.vaccineCode)],
      ["Date", (r) => date(r, "occurrenceDateTime", "recorded")],
      ["Status", (r) => r.status || ""],
    ]));
    into.appendChild(table("results", "Results", get("Observation", "DiagnosticReport"), [
      ["Test", (r) => concept(r.code)],
      ["Value", (r) => r.resourceType === "DiagnosticReport" ? (r.conclusion || "") : value(r)],
      ["Date", (r) => date(r, "effectiveDateTime", "effectivePeriod", "issued")],
    ]));
    const shown = new Set(["Patient", "AllergyIntolerance", "MedicationRequest", "MedicationStatement", "Condition", "Immunization", "Observation", "DiagnosticReport", "Composition"]);
    const others = Object.keys(by).filter((t) => !shown.has(t)).sort();
    if (others.length) {
      const sec = el("section"); sec.id = "other";
      sec.appendChild(el("h2", "Also shared"));
      sec.appendChild(el("div", others.map((t) => t + " (" + by[t].length + ")").join(", ")));
      into.appendChild(sec);
    }
  }

  function resourcesOf(doc) {
    if (doc.resourceType === "Bundle") {
      return (doc.entry || []).map((e) => e.resource).filter(Boolean).flatMap((r) => r.resourceType === "Bundle" ? resourcesOf(r) : [r]);
    }
    return [doc];
  }

  async function open(link, keyBytes, recipient, passcode) {
    let jwes = [];
    if ((link.flag || "").includes("U")) {
      const u = new URL(link.url);
      u.searchParams.set("recipient", recipient);
      const resp = await fetch(u, { cache: "no-store" });
      if (!resp.ok) throw await httpError(resp);
      jwes.push(await resp.text());
    } else {
      const body = { recipient };
      if (passcode) body.passcode = passcode;
      const resp = await fetch(link.url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), cache: "no-store" });
      if (resp.status === 401) {
        const j = await resp.json().catch(() => ({}));
        const e = new Error("Wrong passcode. " + (j.remainingAttempts !== undefined ? j.remainingAttempts + " attempts left." : ""));
        e.passcode = true;
        throw e;
      }
      if (!resp.ok) throw await httpError(resp);
      const manifest = await resp.json();
      for (const f of manifest.files || []) {
        if (f.embedded) jwes.push(f.embedded);
        else if (f.location) {
          const r = await fetch(f.location, { cache: "no-store" });
          if (!r.ok) throw await httpError(r);
          jwes.push(await r.text());
        }
      }
    }
    const content = $("content");
    content.textContent = "";
    let n = 0;
    // Resources of all files are shown together, each once.
    const seen = new Set();
    const resources = [];
    for (const j of jwes) {
      const { header, text } = await decrypt(j, keyBytes);
      const cty = header.cty || "application/fhir+json";
      if (cty.startsWith("application/fhir+json") || cty === "application/json") {
        for (const r of resourcesOf(JSON.parse(text))) {
          const k = r.resourceType + "/" + r.id;
          if (r.id && seen.has(k)) continue;
          seen.add(k);
          resources.push(r);
        }
        n++;
      } else if (cty === "application/smart-health-card") {
        const vc = JSON.parse(text).verifiableCredential || [];
        const sec = el("section"); sec.appendChild(el("h2", "SMART Health Card"));
        sec.appendChild(el("div", vc.length + " verifiable credential(s); open them with a SMART Health Card verifier."));
        content.appendChild(sec); n++;
      } else {
        const sec = el("section"); sec.appendChild(el("h2", "File"));
        sec.appendChild(el("div", "A " + cty + " file of " + text.length + " characters was shared; this viewer cannot show it."));
        content.appendChild(sec); n++;
      }
    }
    if (resources.length) {
      const frag = document.createDocumentFragment();
      render(resources, frag);
      content.insertBefore(frag, content.firstChild);
    }
    status(n + " file(s) decrypted in this browser.");
  }

  async function httpError(resp) {
    if (resp.status === 404) return new Error("This link is no longer available (expired, revoked or disabled).");
    if (resp.status === 429) return new Error("The link was opened too often; try again in " + (resp.headers.get("Retry-After") || "a few") + " seconds.");
    let msg = "";
    try { const j = await resp.json(); msg = (j.issue && j.issue[0] && j.issue[0].diagnostics) || ""; } catch (e) { /* not JSON */ }
    return new Error("The server answered " + resp.status + (msg ? ": " + msg : ""));
  }

  async function main() {
    let link, keyBytes;
    try {
      link = parseLink(location.hash);
      keyBytes = b64urlToBytes(link.key);
      if (keyBytes.length !== 32) throw new Error("the key is not 32 bytes");
    } catch (e) {
      status("Cannot read the link: " + e.message, true);
      return;
    }
    $("title").textContent = link.label || "SMART Health Link";
    if (link.exp) $("subtitle").textContent = "Valid until " + new Date(link.exp * 1000).toISOString().replace(".000", "");
    if (link.exp && link.exp * 1000 < Date.now()) { status("This link expired.", true); return; }
    if ((link.flag || "").includes("P")) {
      status("Enter the passcode you were given with this link.");
      $("passcode-box").hidden = false;
      $("passcode-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        $("passcode-error").textContent = "";
        $("open").disabled = true;
        status("Fetching and decrypting\u2026");
        try {
          await open(link, keyBytes, $("recipient").value || "SMART Health Link viewer", $("passcode").value);
          $("passcode-box").hidden = true;
        } catch (e) {
          if (e.passcode) { $("passcode-error").textContent = e.message; status("Enter the passcode you were given with this link."); }
          else status(e.message, true);
        } finally {
          $("open").disabled = false;
        }
      });
      return;
    }
    status("Fetching and decrypting\u2026");
    try {
      await open(link, keyBytes, "SMART Health Link viewer", "");
    } catch (e) {
      status(e.message, true);
    }
  }
  window.addEventListener("hashchange", () => location.reload());
  main();
})();
