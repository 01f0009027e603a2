// A backend in Node.js, with fetch only: submit a job, follow its Server-Sent Events, read its
// result. Usage: node session.mjs URL KEY; prints the events, then the verdict and stdout.
const [url, key] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${key}` };
const submitted = await fetch(`${url}/v1/jobs`, {
  method: "POST", headers: { ...auth, "Content-Type": "application/json" },
  body: JSON.stringify({ code: "print(6*7)" }),
});
if (submitted.status !== 201) throw new Error(`submit: ${submitted.status}`);
const { id } = await submitted.json();
console.log(`submitted ${id}`);
const events = await fetch(`${url}/v1/jobs/${id}/events`, { headers: auth });
const decoder = new TextDecoder();
let buffer = "", output = "";
for await (const chunk of events.body) {
  buffer += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const kind = /^event: (.*)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (!kind) continue;  // a keepalive comment
    console.log(kind);
    if (kind === "stdout") output += JSON.parse(data).text;
  }
}
const record = await (await fetch(`${url}/v1/jobs/${id}`, { headers: auth })).json();
console.log(`verdict ${record.verdict} stdout ${record.stdout.trim()} streamed ${output.trim()}`);
