// The JS side of the Worker entry (edge/src/worker_entry.rs): each function is one
// crossing of the JS/wasm boundary where workers-rs would make a dozen (headers one by
// one, Request/Response objects built field by field, bodies read as streams), which
// the CPU profile (bench/edge-profile.sh) showed costing more than the work itself.
// Header lists travel as one string: "name\nvalue\nname\nvalue\n".

function headerObject(lines) {
  const headers = {};
  const parts = lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) headers[parts[i]] = parts[i + 1];
  return headers;
}

// The named request headers that are present, as header lines.
export function requestHeaders(request, names) {
  let lines = "";
  for (const name of names.split("\n")) {
    const value = request.headers.get(name);
    if (value !== null) lines += name + "\n" + value + "\n";
  }
  return lines;
}

// An outbound request; resolves to [status, body bytes]. fetch copies a BufferSource
// body at once, so a view into wasm memory is safe here.
export function fetchBytes(url, method, headerLines, body) {
  const init = { method, headers: headerObject(headerLines) };
  if (body.length > 0) init.body = body;
  return fetch(url, init).then((r) => r.arrayBuffer().then((b) => [r.status, new Uint8Array(b)]));
}

// The request body, read only as far as `limit` bytes: null when it is longer, and the
// rest is never read. Whatever Content-Length says (or when there is none: chunked
// uploads, HTTP/2), at most limit + one chunk is held in memory.
export async function readBody(request, limit) {
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.byteLength;
  }
  return body;
}

// The API's answer.
export function respond(status, headerLines, body) {
  return new Response(body.length > 0 ? body : null, { status, headers: headerObject(headerLines) });
}
