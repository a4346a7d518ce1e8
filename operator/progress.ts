/**
 * The NATS side of the operator: keeps the latest progress message per job from
 * `rft.jobs.<ns>.<name>.progress` and publishes control messages on `rft.jobs.<ns>.<name>.control`.
 * Progress wakes the job's reconcile at most once per `minIntervalMs` (status writes are rate-limited);
 * a final status (succeeded, paused, failed, cancelled) wakes it at once.
 */
import { connect, type NatsConnection, type Subscription } from "nats";
import { type ControlMessage, controlSubject, type ProgressMessage } from "../proto/finetunejob-status.js";
import type { Logger } from "../proto/log.js";

export class ProgressBridge {
  private nc?: NatsConnection;
  private sub?: Subscription;
  private readonly latest = new Map<string, ProgressMessage>();
  private readonly lastWake = new Map<string, number>();

  constructor(
    private readonly url: string | undefined,
    private readonly wake: (key: string, delayMs: number) => void,
    private readonly log: Logger,
    private readonly minIntervalMs = 2_000,
  ) {}

  async start(): Promise<void> {
    if (!this.url) return;
    this.nc = await connect({
      servers: this.url,
      name: "rft-operator",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
    });
    this.sub = this.nc.subscribe("rft.jobs.*.*.progress");
    void (async () => {
      for await (const m of this.sub!) {
        const [, , ns, name] = m.subject.split(".");
        if (!ns || !name) continue;
        let msg: ProgressMessage;
        try {
          msg = JSON.parse(new TextDecoder().decode(m.data)) as ProgressMessage;
        } catch {
          continue;
        }
        if (typeof msg.step !== "number" || typeof msg.status !== "string") continue;
        const key = `${ns}/${name}`;
        const prev = this.latest.get(key);
        // Keep the newest attempt's newest message.
        if (prev && (prev.attempt ?? 0) > (msg.attempt ?? 0)) continue;
        this.latest.set(key, msg);
        const final = msg.status !== "running";
        const last = this.lastWake.get(key) ?? 0;
        const wait = final ? 0 : Math.max(0, last + this.minIntervalMs - Date.now());
        this.lastWake.set(key, Date.now() + wait);
        this.wake(key, wait);
      }
    })();
    this.log.info({ url: this.url }, "connected to NATS");
  }

  get(key: string): ProgressMessage | undefined {
    return this.latest.get(key);
  }

  forget(key: string): void {
    this.latest.delete(key);
    this.lastWake.delete(key);
  }

  control(ns: string, name: string, action: ControlMessage["action"]): void {
    if (!this.nc) return;
    this.nc.publish(
      controlSubject(ns, name),
      new TextEncoder().encode(JSON.stringify({ action } satisfies ControlMessage)),
    );
  }

  async close(): Promise<void> {
    await this.nc?.drain().catch(() => {});
  }
}
