// CPU profile of a Worker under load, through the V8 inspector of `wrangler dev`:
// starts the worker (wrangler's own API, inspector on), samples while wrk loads one
// route, and prints self time per function (wasm functions carry their Rust names).
//
//   node edge_profile.mjs WRANGLER_TOML ENV_FILE PORT INSPECTOR_PORT WRK_LUA PATH SECONDS OUT.cpuprofile
//
// Run from the peer's folder (its node_modules holds wrangler and ws); bench/edge-profile.sh
// does the setup. The inspector costs CPU of its own, so read shares, not absolute µs.
import { unstable_startWorker } from "wrangler";
import WebSocket from "ws";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";

const [config, envFile, port, inspectorPort, wrkLua, route, seconds, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node edge_profile.mjs WRANGLER_TOML ENV_FILE PORT INSPECTOR_PORT WRK_LUA PATH SECONDS OUT");
  process.exit(2);
}

const worker = await unstable_startWorker({
  config: path.resolve(config),
  envFiles: [path.resolve(envFile)],
  dev: {
    inspector: { hostname: "127.0.0.1", port: Number(inspectorPort) },
    watch: false,
    logLevel: "warn",
    server: { hostname: "127.0.0.1", port: Number(port) },
  },
});
try {
  await worker.ready;
  const base = `http://127.0.0.1:${port}${route}`;
  const wrk = (secs) => spawnSync("wrk", ["-t1", "-c8", `-d${secs}s`, "-s", wrkLua, base], { encoding: "utf8" });
  wrk(3); // warm-up: JIT tiers, isolate caches

  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl && !/proxy/i.test(t.title ?? "")) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  let nextId = 1;
  const pending = new Map();
  ws.on("message", (data) => {
    const msg = JSON.parse(data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  });
  const call = (method, params = {}) =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });

  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 50 });
  await call("Profiler.start");
  const load = wrk(Number(seconds));
  const { result } = await call("Profiler.stop");
  ws.close();
  writeFileSync(out, JSON.stringify(result.profile));
  const requests = Number(/(\d+) requests in/.exec(load.stdout)?.[1] ?? 0);
  summarize(result.profile, requests);
} finally {
  await worker.dispose();
}

function summarize(profile, requests) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  const total = new Map();
  let sampled = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const node = byId.get(id);
    const name = label(node);
    if (name === "(idle)") return;
    sampled += dt;
    self.set(name, (self.get(name) ?? 0) + dt);
    // inclusive time: every distinct frame on the stack once
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur));
      if (!seen.has(l)) {
        seen.add(l);
        total.set(l, (total.get(l) ?? 0) + dt);
      }
    }
  });
  const per = (us) => (requests ? `${(us / requests).toFixed(1).padStart(8)} µs/req` : "");
  console.log(`requests ${requests}, busy samples ${(sampled / 1000).toFixed(0)} ms, ${per(sampled)} in the isolate`);
  for (const [title, map] of [["self", self], ["inclusive", total]]) {
    console.log(`\ntop ${title} time:`);
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 40)
      .forEach(([name, us]) => console.log(`${((100 * us) / sampled).toFixed(1).padStart(6)} % ${per(us)}  ${name}`));
  }
}

function label(node) {
  const f = node.callFrame;
  const file = f.url ? path.basename(f.url) : "";
  return `${f.functionName || "(anonymous)"}${file ? ` [${file}]` : ""}`;
}
