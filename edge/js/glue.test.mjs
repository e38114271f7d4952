// The glue's body reader (review defect 10), run under Node's test runner against real
// streams: it must stop reading an endless upload soon after the limit, and return a
// body within the limit whole. `node --test edge/js/` (scripts/test.sh runs it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readBody } from "./glue.js";

const KIB = 1024;

test("an endless upload is read only a little past the limit", async () => {
  let pulled = 0;
  const stream = new ReadableStream({
    pull(controller) {
      pulled += 64 * KIB;
      controller.enqueue(new Uint8Array(64 * KIB));
    },
  });
  const request = new Request("http://edge.test/send", { method: "POST", body: stream, duplex: "half" });
  assert.equal(await readBody(request, 256 * KIB), null);
  // The limit, the chunk that crossed it, and what the stream queues ahead.
  assert.ok(pulled <= 256 * KIB + 3 * 64 * KIB, `pulled ${pulled / KIB} KiB for a 256 KiB limit`);
});

test("a body within the limit comes back whole, one byte more does not", async () => {
  const post = (body) => new Request("http://edge.test/send", { method: "POST", body });
  const body = await readBody(post("x".repeat(1000)), 1000);
  assert.equal(new TextDecoder().decode(body), "x".repeat(1000));
  assert.equal(await readBody(post("x".repeat(1001)), 1000), null);
  assert.equal((await readBody(new Request("http://edge.test/"), 10)).length, 0);
});
