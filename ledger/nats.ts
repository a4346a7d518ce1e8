/** JetStream resources of the ledger: the RFT_LEDGER stream (file storage) and the RFT_LEDGER_HEADS KV bucket. */
import { type JetStreamManager, type NatsConnection, nanos, RetentionPolicy, StorageType } from "nats";
import { LEDGER_HEADS_BUCKET, LEDGER_STREAM, LEDGER_SUBJECT_PREFIX } from "../proto/ledger-events.js";

/** Creates the ledger stream if absent (idempotent). Retention: limits with no limit; nothing expires. */
export async function ensureLedgerStream(jsm: JetStreamManager, replicas = 1): Promise<void> {
  try {
    await jsm.streams.info(LEDGER_STREAM);
  } catch {
    try {
      await jsm.streams.add({
        name: LEDGER_STREAM,
        subjects: [`${LEDGER_SUBJECT_PREFIX}.>`],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        num_replicas: replicas,
        duplicate_window: nanos(120_000),
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
