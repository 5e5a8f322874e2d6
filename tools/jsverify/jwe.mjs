// jwe.mjs: an independent JWE implementation (the npm "jose" package) that
// phr's Go tests use to check their own output and input.
//
// stdin:  a JSON array of requests
//   {"op":"decrypt","jwe":"<compact>","key":"<base64url>"[,"maxDecompressedLength":n]}
//   {"op":"encrypt","key":"<base64url>","plaintext":"<base64url>","header":{...protected header...}}
// stdout: a JSON array of results, one per request, in the same order
//   decrypt: {"ok":true,"header":{...},"plaintext":"<base64url>"}
//   encrypt: {"ok":true,"jwe":"<compact>"}
//   failure: {"ok":false,"code":"<jose error code>","error":"<message>"}
// Only "dir" + "A256GCM" are accepted on decrypt, as SMART Health Links use.
import { CompactEncrypt, compactDecrypt, base64url } from "jose";

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

async function run(req) {
  const key = base64url.decode(req.key);
  switch (req.op) {
    case "decrypt": {
      const { plaintext, protectedHeader } = await compactDecrypt(req.jwe, key, {
        keyManagementAlgorithms: ["dir"],
        contentEncryptionAlgorithms: ["A256GCM"],
        maxDecompressedLength: req.maxDecompressedLength ?? Infinity,
      });
      return { ok: true, header: protectedHeader, plaintext: base64url.encode(plaintext) };
    }
    case "encrypt": {
      const jwe = await new CompactEncrypt(base64url.decode(req.plaintext))
        .setProtectedHeader(req.header)
        .encrypt(key);
      return { ok: true, jwe };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}

const requests = JSON.parse(await readStdin());
if (!Array.isArray(requests)) {
  console.error("jwe.mjs: stdin must be a JSON array of requests");
  process.exit(2);
}
const results = [];
for (const req of requests) {
  try {
    results.push(await run(req));
  } catch (e) {
    results.push({ ok: false, code: e.code ?? e.name, error: e.message });
  }
}
process.stdout.write(JSON.stringify(results));
