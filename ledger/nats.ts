/**
 * JetStream resources of the ledger: the RFT_LEDGER stream (file storage), the RFT_LEDGER_HEADS KV bucket
 * (signed tree heads) and the RFT_JOB_KEYS bucket (each job's registered key, written by the operator).
 */
import { type JetStreamManager, type NatsConnection, nanos, RetentionPolicy, StorageType } from "nats";
import { JOB_KEYS_BUCKET } from "../proto/nats-auth.js";
import { LEDGER_HEADS_BUCKET, LEDGER_STREAM, LEDGER_SUBJECT_PREFIX } from "../proto/ledger-events.js";

/**
 * Creates the ledger stream if absent (idempotent). Retention: limits with no limit; nothing expires. Direct
 * get is on: a trainer reads its own subject's last event (resume) through `$JS.API.DIRECT.GET`, the one
 * JetStream call its NATS user may make; a stream made before that is updated.
 */
export async function ensureLedgerStream(jsm: JetStreamManager, replicas = 1): Promise<void> {
  try {
    const info = await jsm.streams.info(LEDGER_STREAM);
    if (!info.config.allow_direct) await jsm.streams.update(LEDGER_STREAM, { ...info.config, allow_direct: true });
  } catch {
    try {
      await jsm.streams.add({
        name: LEDGER_STREAM,
        subjects: [`${LEDGER_SUBJECT_PREFIX}.>`],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        num_replicas: replicas,
        duplicate_window: nanos(120_000),
        allow_direct: true,
      });
    } catch (e) {
      // Another process created it between our info and add.
      await jsm.streams.info(LEDGER_STREAM).catch(() => {
        throw e;
      });
    }
  }
}

export async function headsBucket(nc: NatsConnection) {
  return nc.jetstream().views.kv(LEDGER_HEADS_BUCKET, { history: 16, storage: StorageType.File });
}

/** The registered job keys (the operator writes, the ledger reads); bindOnly: for users that may not create it. */
export async function jobKeysBucket(nc: NatsConnection, opts: { bindOnly?: boolean } = {}) {
  return nc.jetstream().views.kv(JOB_KEYS_BUCKET, { history: 8, storage: StorageType.File, ...opts });
}
