/**
 * EventWriter: the one writer of a job's chain (the trainer's rank 0). Builds, signs and hands each event to a
 * sink (ledger/publisher.ts: NATS with a disk spool, or an append-only JSONL file).
 */
import type { KeyObject } from "node:crypto";
import type { EventBodies, LedgerEvent, LedgerEventType } from "../proto/ledger-events.js";
import { type ChainHead, nextEvent } from "./chain.js";
import { keyId } from "./sign.js";

export interface EventSink {
  /** Takes ownership of a signed event; must keep job order. */
  write(event: LedgerEvent): void;
  /**
   * The last event of `job` durably written through this kind of sink (by this process or an earlier one),
   * signed with `signer` (raw base64 public key); null when there is none. A restarted writer continues the
   * chain after it (ledger/README.md, "Resuming").
   */
  lastEvent?(job: string, signer: string): Promise<LedgerEvent | null>;
  /** The event of `job` at `seq` durably written through this sink; null when there is none (random access). */
  eventAt?(job: string, seq: number): Promise<LedgerEvent | null>;
  /** Makes every event written so far durable (a local file: fsync); absent where write already is. */
  sync?(): void;
}

export interface EventWriterOptions {
  job: string;
  privateKey: KeyObject;
  sink?: EventSink;
  /** Continue an existing chain (after a restart): the next seq and the hash of the last event. */
  resume?: ChainHead;
  now?: () => Date;
}

export class EventWriter {
  private state: ChainHead;
  private readonly keyId: string;

  constructor(private readonly opts: EventWriterOptions) {
    this.state = opts.resume ?? { job: opts.job, seq: 0, prev: null };
    this.keyId = keyId(opts.privateKey);
  }

  get head(): ChainHead {
    return { ...this.state };
  }

  append<K extends LedgerEventType>(type: K, body: EventBodies[K]): LedgerEvent {
    const time = (this.opts.now?.() ?? new Date()).toISOString();
    const r = nextEvent(this.state, type, body, time, this.opts.privateKey, this.keyId);
    this.state = r.head;
    this.opts.sink?.write(r.event);
    return r.event;
  }
}
