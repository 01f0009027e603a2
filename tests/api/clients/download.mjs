// A backend in Node.js downloading a job's collected file with fetch, streamed to disk's
// stand-in (a hash), and checking it against the ETag the API gave (its sha256).
// Usage: node download.mjs URL KEY JOB_ID NAME; prints the name, its size and the check.
import { createHash } from "node:crypto";

const [url, key, id, name] = process.argv.slice(2);
const path = name.split("/").map(encodeURIComponent).join("/");
const answer = await fetch(`${url}/v1/jobs/${id}/files/${path}`,
                           { headers: { Authorization: `Bearer ${key}` } });
if (answer.status !== 200) throw new Error(`download: ${answer.status} ${await answer.text()}`);
const hash = createHash("sha256");
let size = 0;
for await (const chunk of answer.body) {
  hash.update(chunk);
  size += chunk.length;
}
const etag = answer.headers.get("etag").replaceAll('"', "");
if (String(size) !== answer.headers.get("content-length")) throw new Error("short download");
const verdict = hash.digest("hex") === etag ? "matches its ETag" : "DOES NOT match its ETag";
console.log(`${name} ${size} bytes, sha256 ${verdict}`);
