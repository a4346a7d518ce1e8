/**
 * The trainer's control subscriber against a real nats-server: malformed control messages (not JSON, an
 * unknown action, extra fields, oversized, a non-object) are dropped and counted, never acted on; the genuine
 * pause / resume / cancel are applied.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "nats";
import { controlSubject } from "../../proto/finetunejob-status.js";
import { createLogger } from "../../proto/log.js";
import { type ControlDropReason, parseControl, subscribeControl } from "../../trainer/job/control.js";
import type { RftControl } from "../../trainer/rl/loop.js";
import { NatsServer } from "../ledger/nats-server.js";
import { waitFor } from "../k8s/cluster.js";

let nats: NatsServer;
let sub: NatsConnection;
let pub: NatsConnection;

before(async () => {
  nats = await NatsServer.start();
  sub = await connect({ servers: nats.url });
  pub = await connect({ servers: nats.url });
});

after(async () => {
  await sub?.close();
  await pub?.close();
  await nats?.stop();
});

test("parseControl accepts exactly the three actions", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.deepEqual(parseControl(enc('{"action":"pause"}')), { action: "pause" });
  assert.deepEqual(parseControl(enc('{"action":"shutdown"}')), { dropped: "schema" });
  assert.deepEqual(parseControl(enc('{"action":"cancel","x":1}')), { dropped: "schema" });
  assert.deepEqual(parseControl(enc("null")), { dropped: "schema" });
  assert.deepEqual(parseControl(enc('["cancel"]')), { dropped: "schema" });
  assert.deepEqual(parseControl(enc("{cancel")), { dropped: "not_json" });
  assert.deepEqual(parseControl(new Uint8Array([0x7b, 0xff, 0x7d])), { dropped: "not_json" });
  assert.deepEqual(parseControl(enc(`{"action":"cancel","pad":"${"x".repeat(2000)}"}`)), { dropped: "too_large" });
});

test("malformed control messages over NATS are dropped and counted; valid ones applied", async () => {
  const control: RftControl = { pause: false, cancel: false };
  const drops: ControlDropReason[] = [];
  subscribeControl(sub, { namespace: "ml", name: "sorter" }, control, createLogger("control-test", "silent"), (r) =>
    drops.push(r),
  );
  await sub.flush();
  const s = controlSubject("ml", "sorter");
  const send = (body: string) => pub.publish(s, new TextEncoder().encode(body));
  send('{"action":"Cancel"}');
  send('{"action":"cancel","by":"someone"}');
  send("cancel");
  send(`{"action":"cancel","pad":"${"x".repeat(5000)}"}`);
  send('{"action":"pause"}');
  await pub.flush();
  await waitFor("pause applied", () => control.pause, 10_000, 20);
  assert.equal(control.cancel, false);
  assert.deepEqual(drops, ["schema", "schema", "not_json", "too_large"]);
  send('{"action":"resume"}');
  send('{"action":"cancel"}');
  await pub.flush();
  await waitFor("cancel applied", () => control.cancel, 10_000, 20);
  assert.equal(control.pause, false);
});
