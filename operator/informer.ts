/**
 * A hardened list-watch informer (client-node 1.x's informer loses watches silently; see ARCHITECTURE):
 * - list, then watch from the list's resourceVersion with bookmarks;
 * - a broken watch restarts with exponential backoff, and only one restart is ever pending;
 * - a 410 Gone (or an ERROR event) re-lists; a watchdog restarts a watch that has been silent too long;
 * - a periodic relist replaces the cache even when the watch looks healthy;
 * - after every (re)list, `onResync` gets every cached object (a full reconcile after reconnect);
 * - an optional label selector keeps child informers to our own objects.
 */
import type { Logger } from "../proto/log.js";
import type { KObj, KubeClient } from "./client.js";

export interface InformerOptions {
  path: string;
  labelSelector?: string;
  /** Restart the watch when nothing (not even a bookmark) arrived for this long. */
  watchdogMs?: number;
  relistMs?: number;
  maxBackoffMs?: number;
  onChange: (obj: KObj, type: "ADDED" | "MODIFIED" | "DELETED") => void;
  /** After every list: every object in the cache. */
  onResync?: (objs: KObj[]) => void;
  log: Logger;
}

const keyOf = (o: KObj) => `${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;

export class Informer {
  readonly cache = new Map<string, KObj>();
  synced = false;
  restarts = 0;
  private rv = "";
  private stopped = false;
  private current?: { destroy(): void };
  private pending?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private relist?: NodeJS.Timeout;
  private lastActivity = Date.now();
  private backoffMs = 250;
  private syncWaiters: (() => void)[] = [];

  constructor(
    private readonly client: KubeClient,
    private readonly o: InformerOptions,
  ) {}

  get(ns: string, name: string): KObj | undefined {
    return this.cache.get(`${ns}/${name}`);
  }

  list(): KObj[] {
    return [...this.cache.values()];
  }

  start(): void {
    const wd = this.o.watchdogMs ?? 60_000;
    this.watchdog = setInterval(
      () => {
        if (this.current && Date.now() - this.lastActivity > wd) {
          this.o.log.warn({ path: this.o.path }, "watch silent: restarting");
          this.restart("watchdog");
        }
      },
      Math.max(100, wd / 4),
    );
    this.relist = setInterval(
      () => {
        this.rv = "";
        this.restart("periodic relist");
      },
      this.o.relistMs ?? 10 * 60_000,
    );
    this.watchdog.unref();
    this.relist.unref();
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.watchdog);
    clearInterval(this.relist);
    clearTimeout(this.pending);
    this.current?.destroy();
  }

  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((r) => this.syncWaiters.push(r));
  }

  /** Schedules one restart (a second request while one is pending is dropped). */
  private restart(why: string, delayMs = 0): void {
    if (this.stopped || this.pending) return;
    this.restarts++;
    const cur = this.current;
    this.current = undefined;
    cur?.destroy();
    this.o.log.debug({ path: this.o.path, why, delayMs }, "informer restart");
    this.pending = setTimeout(() => {
      this.pending = undefined;
      void this.run();
    }, delayMs);
  }

  private query(extra: Record<string, string>): string {
    const q: Record<string, string> = { ...extra };
    if (this.o.labelSelector) q.labelSelector = this.o.labelSelector;
    return `${this.o.path}?${new URLSearchParams(q)}`;
  }

  private async doList(): Promise<void> {
    const list = await this.client.get(this.query({ limit: "5000" }));
    const items: KObj[] = list.items ?? [];
    const seen = new Set<string>();
    for (const it of items) {
      const k = keyOf(it);
      seen.add(k);
      const prev = this.cache.get(k);
      this.cache.set(k, it);
      if (!prev) this.o.onChange(it, "ADDED");
      else if (prev.metadata.resourceVersion !== it.metadata.resourceVersion) this.o.onChange(it, "MODIFIED");
    }
    for (const [k, prev] of this.cache) {
      if (!seen.has(k)) {
        this.cache.delete(k);
        this.o.onChange(prev, "DELETED");
      }
    }
    this.rv = list.metadata.resourceVersion;
    this.o.onResync?.(items);
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    try {
      if (!this.rv) await this.doList();
      const res = await this.client.open(
        "GET",
        this.query({ watch: "1", resourceVersion: this.rv, allowWatchBookmarks: "true", timeoutSeconds: "300" }),
        undefined,
        undefined,
        330_000,
      );
      if (this.stopped) return void res.destroy();
      if ((res.statusCode ?? 500) >= 300) {
        res.resume();
        if (res.statusCode === 410) this.rv = "";
        throw new Error(`watch ${this.o.path}: HTTP ${res.statusCode}`);
      }
      this.current = res;
      this.lastActivity = Date.now();
      this.backoffMs = 250;
      let buf = "";
      for await (const chunk of res) {
        this.lastActivity = Date.now();
        buf += (chunk as Buffer).toString("utf8");
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          nl = buf.indexOf("\n");
          if (line) this.onEvent(JSON.parse(line));
        }
      }
      if (this.current === res) this.restart("watch ended");
    } catch (e) {
      if (this.stopped) return;
      this.o.log.warn({ path: this.o.path, err: String(e), backoffMs: this.backoffMs }, "watch failed");
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, this.o.maxBackoffMs ?? 30_000);
      this.current = undefined;
      this.restart("error", delay);
    }
  }

  private onEvent(ev: { type: string; object: KObj }): void {
    if (ev.type === "ERROR") {
      if (ev.object?.code === 410) this.rv = "";
      throw new Error(`watch error: ${ev.object?.message ?? "unknown"}`);
    }
    this.rv = ev.object?.metadata?.resourceVersion ?? this.rv;
    if (ev.type === "BOOKMARK") return;
    const k = keyOf(ev.object);
    if (ev.type === "DELETED") this.cache.delete(k);
    else this.cache.set(k, ev.object);
    this.o.onChange(ev.object, ev.type as "ADDED" | "MODIFIED" | "DELETED");
  }
}
