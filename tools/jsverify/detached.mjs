// detached.mjs: verifies a detached JWS (RFC 7515 appendix F, as phr signs
// exports: "header..signature" over the SHA-256 digest of the file) with the
// npm "jose" package, against a JSON Web Key Set.
//
// stdin:  {"jws": "<header>..<signature>", "payload": "<base64url of the signed bytes>", "jwks": {"keys": [...]}}
// stdout: {"valid": true, "kid": "...", "alg": "EdDSA", "typ": "..."} or {"valid": false, "error": "..."}
import { compactVerify, createLocalJWKSet } from "jose";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { jws, payload, jwks } = JSON.parse(input);
const parts = jws.split(".");
if (parts.length !== 3 || parts[1] !== "") {
  process.stdout.write(JSON.stringify({ valid: false, error: "not a detached compact JWS" }));
  process.exit(0);
}
try {
  const full = `${parts[0]}.${payload}.${parts[2]}`;
  const { protectedHeader } = await compactVerify(full, createLocalJWKSet(jwks));
  process.stdout.write(JSON.stringify({ valid: true, kid: protectedHeader.kid, alg: protectedHeader.alg, typ: protectedHeader.typ }));
} catch (e) {
  process.stdout.write(JSON.stringify({ valid: false, error: String(e.message || e) }));
}
