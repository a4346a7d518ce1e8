/**
 * Durable JSON records off the event loop: each write goes to a fresh sibling, is fsynced, renamed over the
 * record and the directory fsynced (in libuv's thread pool, so a server with many clients never waits for the
 * disk on its event loop). Writes of one record are serialised and coalesced: a write asked for while one is
 * in flight waits for the next, which carries the latest data; every caller's promise resolves once data at
 * least as new as its own is on disk.
 */
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

let counter = 0;

export async function replaceFileAtomicAsync(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${++counter}`;
  try {
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const d = await open(dirname(path), "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export class DurableRecord {
  private inflight = false;
  private next: { data: string; done: (() => void)[]; fail: ((e: unknown) => void)[] } | null = null;

  private idleWaiters: (() => void)[] = [];

  constructor(readonly path: string) {}

  /** Resolves when no write is in flight or pending. */
  idle(): Promise<void> {
    if (!this.inflight && !this.next) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  write(data: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.next ??= { data, done: [], fail: [] };
      this.next.data = data;
      this.next.done.push(resolve);
      this.next.fail.push(reject);
      if (!this.inflight) this.drain();
    });
  }

  private drain() {
    const w = this.next;
    this.next = null;
    if (!w) {
      this.inflight = false;
      this.idleWaiters.splice(0).forEach((f) => f());
      return;
    }
    this.inflight = true;
    replaceFileAtomicAsync(this.path, w.data).then(
      () => {
        w.done.forEach((f) => f());
        this.drain();
      },
      (e: unknown) => {
        w.fail.forEach((f) => f(e));
        this.drain();
      },
    );
  }
}
