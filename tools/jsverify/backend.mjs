// backend.mjs: a SMART Backend Services client written against the npm
// "jose" package and Node's fetch, independent of phr's Go code. It signs a
// client assertion (ES384 or RS384), gets an access token from the token
// endpoint with client_credentials, and reads one resource with it.
//
// stdin:  {"tokenUrl": "...", "fhirBase": "...", "clientId": "...",
//          "alg": "ES384"|"RS384", "privateJwk": {...}, "scope": "system/*.rs",
//          "read": "Patient/123"}
// stdout: {"tokenStatus": 200, "token": {...token response without the
//          access_token...}, "hasAccessToken": true, "readStatus": 200,
//          "resourceType": "Patient", "id": "123"}
// A refused request is a result (its status and body are reported), not a
// crash; only bad input exits non-zero.
import { randomUUID } from "node:crypto";
import { SignJWT, importJWK } from "jose";

function fail(msg) {
  process.stderr.write(`backend.mjs: ${msg}\n`);
  process.exit(2);
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
let req;
try {
  req = JSON.parse(input);
} catch (e) {
  fail(`stdin is not JSON: ${e.message}`);
}
for (const k of ["tokenUrl", "fhirBase", "clientId", "alg", "privateJwk", "scope"]) {
  if (!req[k]) fail(`${k} is required`);
}
if (req.alg !== "ES384" && req.alg !== "RS384") fail(`alg ${req.alg}: use ES384 or RS384`);

const key = await importJWK(req.privateJwk, req.alg);
const now = Math.floor(Date.now() / 1000);
const assertion = await new SignJWT({})
  .setProtectedHeader({ alg: req.alg, kid: req.privateJwk.kid, typ: "JWT" })
  .setIssuer(req.clientId)
  .setSubject(req.clientId)
  .setAudience(req.tokenUrl)
  .setIssuedAt(now)
  .setExpirationTime(now + 240)
  .setJti(randomUUID())
  .sign(key);

const form = new URLSearchParams({
  grant_type: "client_credentials",
  scope: req.scope,
  client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
  client_assertion: assertion,
});
const tr = await fetch(req.tokenUrl, {
  method: "POST",
  headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
  body: form,
});
const token = await tr.json();
const out = { tokenStatus: tr.status, cacheControl: tr.headers.get("cache-control"), hasAccessToken: typeof token.access_token === "string" };
const accessToken = token.access_token;
delete token.access_token;
out.token = token;
if (accessToken && req.read) {
  const rr = await fetch(`${req.fhirBase}/${req.read}`, {
    headers: { Authorization: `Bearer ${accessToken}`, Accept: "application/fhir+json" },
  });
  out.readStatus = rr.status;
  const body = await rr.json();
  out.resourceType = body.resourceType;
  out.id = body.id;
}
process.stdout.write(JSON.stringify(out) + "\n");
