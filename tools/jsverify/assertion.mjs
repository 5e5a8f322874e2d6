// assertion.mjs: prints a SMART Backend Services client assertion signed by
// an independent JWS implementation (the npm "jose" package), so phr's Go
// verifier (internal/auth/clientauth) is checked against what real clients
// send, and so a person can make one to try the token endpoint by hand.
//
// Usage (unlike the stdin-JSON scripts here, this one is a command-line tool:
// its output is meant to be pasted into a client_assertion form field):
//
//   node assertion.mjs --client-id ID --aud TOKEN_URL --key KEY_FILE
//                      [--alg ES384|RS384] [--kid KID] [--jku URL]
//                      [--exp SECONDS] [--jti ID]
//
// KEY_FILE is a PKCS#8 PEM private key ("-----BEGIN PRIVATE KEY-----") or a
// private JWK (JSON). --alg defaults to the key's type: ES384 for a P-384 EC
// key, RS384 for RSA. --kid defaults to the JWK's kid, else to the key's RFC
// 7638 thumbprint. --exp is the lifetime in seconds (default 300, the most
// SMART allows). The compact JWS goes to stdout followed by a newline;
// errors go to stderr with exit status 2.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { SignJWT, importPKCS8, importJWK, exportJWK, calculateJwkThumbprint } from "jose";

function fail(msg) {
  process.stderr.write(`assertion.mjs: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      "client-id": { type: "string" },
      aud: { type: "string" },
      key: { type: "string" },
      alg: { type: "string" },
      kid: { type: "string" },
      jku: { type: "string" },
      exp: { type: "string", default: "300" },
      jti: { type: "string" },
    },
    strict: true,
  }));
} catch (e) {
  fail(e.message);
}
for (const name of ["client-id", "aud", "key"]) {
  if (!args[name]) fail(`--${name} is required`);
}
const lifetime = Number(args.exp);
if (!Number.isInteger(lifetime) || lifetime <= 0) fail(`--exp ${args.exp}: want a positive whole number of seconds`);

let text;
try {
  text = readFileSync(args.key, "utf8");
} catch (e) {
  fail(`--key ${args.key}: ${e.message}`);
}

let alg = args.alg;
let kid = args.kid;
let key;
try {
  if (text.trimStart().startsWith("{")) {
    const jwk = JSON.parse(text);
    alg ??= jwk.alg ?? (jwk.kty === "RSA" ? "RS384" : "ES384");
    kid ??= jwk.kid ?? (await calculateJwkThumbprint(jwk, "sha256"));
    key = await importJWK(jwk, alg);
  } else {
    // Try the two SMART algorithms: the key type decides which one imports.
    const candidates = alg ? [alg] : ["ES384", "RS384"];
    let lastErr;
    for (const a of candidates) {
      try {
        key = await importPKCS8(text, a, { extractable: true });
        alg = a;
        break;
      } catch (e) {
        lastErr = e;
      }
    }
    if (!key) throw lastErr;
  }
} catch (e) {
  fail(`--key ${args.key}: cannot use it for ${alg ?? "ES384 or RS384"}: ${e.message}`);
}
if (alg !== "ES384" && alg !== "RS384") fail(`--alg ${alg}: SMART Backend Services uses ES384 or RS384`);

if (!kid) {
  // The RFC 7638 thumbprint, which covers only the public members.
  kid = await calculateJwkThumbprint(await exportJWK(key), "sha256");
}

const header = { alg, kid, typ: "JWT" };
if (args.jku) header.jku = args.jku;
const now = Math.floor(Date.now() / 1000);
const jwt = await new SignJWT({})
  .setProtectedHeader(header)
  .setIssuer(args["client-id"])
  .setSubject(args["client-id"])
  .setAudience(args.aud)
  .setIssuedAt(now)
  .setExpirationTime(now + lifetime)
  .setJti(args.jti ?? randomUUID())
  .sign(key);
process.stdout.write(jwt + "\n");
