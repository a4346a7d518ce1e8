/**
 * The ledger's audit API as `rft ledger` serves it (the real CLI, a real nats-server, real HTTP): it binds
 * 127.0.0.1 by default (another address of the machine, 127.0.0.2, is refused), every /v1 endpoint needs the
 * bearer token from --token-file (401 with a body that says what to send), /healthz and /metrics stay open,
 * and a non-loopback --host without a token is refused at start with one clear line.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { bearerMatches } from "../../ledger/service.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { freePort, NatsServer } from "./nats-server.js";

let nats: NatsServer;
let dir: string;
let proc: ChildProcess | undefined;
let port: number;
const TOKEN = "s3cret-token-0123456789";

const reachable = (host: string, p: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host, port: p });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });

before(async () => {
  nats = await NatsServer.start();
  dir = mkdtempSync(join(tmpdir(), "rft-ledger-auth-"));
  const key = generateKeyPair().privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  writeFileSync(join(dir, "ledger.pem"), key, { mode: 0o600 });
  writeFileSync(join(dir, "token"), `${TOKEN}\n`, { mode: 0o600 });
  port = await freePort();
  const p = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cli/rft.ts",
      "ledger",
      "--nats",
      nats.url,
      "--port",
      String(port),
      "--key",
      join(dir, "ledger.pem"),
      "--token-file",
      join(dir, "token"),
    ],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RFT_LOG_LEVEL: "silent" } },
  );
  proc = p;
  await new Promise<void>((resolve, reject) => {
    let err = "";
    p.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      if (/audit API on/.test(err)) resolve();
    });
    p.once("exit", (code) => reject(new Error(`rft ledger exited ${code}: ${err}`)));
  });
});

after(async () => {
  if (proc && proc.exitCode === null) {
    const p = proc;
    await new Promise<void>((r) => {
      p.once("exit", () => r());
      p.kill("SIGTERM");
    });
  }
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("rft ledger binds 127.0.0.1 by default and requires the bearer token on /v1", async () => {
  assert.equal(await reachable("127.0.0.1", port), true);
  assert.equal(await reachable("127.0.0.2", port), false);
  const base = `http://127.0.0.1:${port}`;
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  assert.equal((await fetch(`${base}/metrics`)).status, 200);
  const none = await fetch(`${base}/v1/jobs`);
  assert.equal(none.status, 401);
  assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="rft-ledger"');
  assert.match(
    ((await none.json()) as { error: string }).error,
    /authentication required: send Authorization: Bearer <token>/,
  );
  const wrong = await fetch(`${base}/v1/jobs`, { headers: { authorization: "Bearer nope" } });
  assert.equal(wrong.status, 401);
  assert.deepEqual(await wrong.json(), { error: "wrong bearer token" });
  const ok = await fetch(`${base}/v1/jobs`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { jobs: [] });
  assert.equal((await fetch(`${base}/v1/key`, { headers: { authorization: `Basic ${TOKEN}` } })).status, 401);
});

test("a non-loopback --host without a token is refused at start", () => {
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "ledger", "--host", "0.0.0.0", "--key", join(dir, "ledger.pem")],
    { encoding: "utf8", env: { ...process.env, RFT_LOG_LEVEL: "silent" }, timeout: 60_000 },
  );
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /refusing to serve the audit API on 0\.0\.0\.0 without authentication: pass --token-file/);
});

test("bearerMatches: exact token only", () => {
  assert.equal(bearerMatches(`Bearer ${TOKEN}`, TOKEN), true);
  assert.equal(bearerMatches(`Bearer ${TOKEN}x`, TOKEN), false);
  assert.equal(bearerMatches(`bearer ${TOKEN}`, TOKEN), false);
  assert.equal(bearerMatches(undefined, TOKEN), false);
  assert.equal(bearerMatches("Bearer ", ""), false);
});
