/**
 * The trainer's control subscriber: pause / resume / cancel from `rft.jobs.<ns>.<name>.control`. A message is
 * trusted only as far as its shape: larger than CONTROL_MAX_BYTES, not UTF-8 JSON, or not exactly
 * `{"action": "pause" | "resume" | "cancel"}` → dropped, logged and counted (`onDrop(reason)`), never acted on.
 * (Who may publish on the subject is NATS's permissions' business, not this file's.)
 */
import { Ajv } from "ajv";
import type { NatsConnection } from "nats";
import { CONTROL_MAX_BYTES, ControlMessage, controlSubject } from "../../proto/finetunejob-status.js";
import type { Logger } from "../../proto/log.js";
import type { RftControl } from "../rl/loop.js";

export type ControlDropReason = "too_large" | "not_json" | "schema";

const validControl = new Ajv({ strict: false }).compile<ControlMessage>(ControlMessage);
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One control message's bytes → the message, or why it is dropped. */
export function parseControl(data: Uint8Array): ControlMessage | { dropped: ControlDropReason } {
  if (data.byteLength > CONTROL_MAX_BYTES) return { dropped: "too_large" };
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(data));
  } catch {
    return { dropped: "not_json" };
  }
  return validControl(raw) ? raw : { dropped: "schema" };
}

/** Subscribes to the job's control subject and applies each valid message to `control`. */
export function subscribeControl(
  nc: NatsConnection,
  job: { namespace: string; name: string },
  control: RftControl,
  log: Logger,
  onDrop?: (reason: ControlDropReason) => void,
): void {
  const sub = nc.subscribe(controlSubject(job.namespace, job.name));
  void (async () => {
    for await (const m of sub) {
      const msg = parseControl(m.data);
      if ("dropped" in msg) {
        onDrop?.(msg.dropped);
        log.warn({ reason: msg.dropped, bytes: m.data.byteLength }, "malformed control message dropped");
        continue;
      }
      log.info({ action: msg.action }, "control message");
      if (msg.action === "pause") control.pause = true;
      else if (msg.action === "cancel") control.cancel = true;
      else control.pause = false;
    }
  })().catch((e) => log.warn({ err: String(e) }, "control subscription ended"));
}
