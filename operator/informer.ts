/**
 * A hardened list-watch informer (client-node 1.x's informer loses watches silently; see ARCHITECTURE):
 * - list page by page (`limit` + `continue`, as client-go's pager; the cache is replaced only once every page has
 *   arrived, so a large collection is never truncated), then watch from the list's resourceVersion with bookmarks;
 * - a continuation whose token expired (410: etcd compacted past the list's snapshot) falls back to one
 *   unpaginated list, as client-go's pager does;
 * - a broken watch restarts with exponential backoff, and only one restart is ever pending;
 * - a 410 Gone (or an ERROR event) re-lists; a watchdog restarts a watch that has been silent too long;
 * - a periodic relist replaces the cache even when the watch looks healthy;
 * - after every (re)list, `onResync` gets every cached object (a full reconcile after reconnect);
 * - an optional label selector keeps child informers to our own objects.
 */
import type { Logger } from "../proto/log.js";
import { type KObj, type KubeClient, KubeError } from "./client.js";

export interface InformerOptions {
  path: string;
  labelSelector?: string;
  /** Objects per list page (client-go's pager uses 500). */
  pageSize?: number;
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

type Change = [KObj, "ADDED" | "MODIFIED" | "DELETED"];

/** One consistent list of a collection: every page of it, and the resourceVersion of its snapshot. */
export interface FullList {
  items: KObj[];
  resourceVersion: string;
  /** Requests it took (pages, plus the unpaginated fallback). */
  requests: number;
}

/**
 * Lists every object, `pageSize` at a time, following `metadata.continue` (every page is read at the first page's
 * snapshot, so the result is one consistent list). A 410 on a continuation means the token expired (the snapshot
 * was compacted away): the list is then redone in one unpaginated request, as client-go's pager does.
 */
export async function listAll(
  get: (path: string) => Promise<KObj>,
  query: (params: Record<string, string>) => string,
  pageSize: number,
): Promise<FullList> {
  const items: KObj[] = [];
  let token = "";
  for (let requests = 1; ; requests++) {
    let page: KObj;
    try {
      page = await get(query({ limit: String(pageSize), ...(token ? { continue: token } : {}) }));
    } catch (e) {
      if (!token || !(e instanceof KubeError) || e.status !== 410) throw e;
      const full = await get(query({}));
      return { items: full.items ?? [], resourceVersion: full.metadata.resourceVersion, requests: requests + 1 };
    }
    for (const it of page.items ?? []) items.push(it);
    token = page.metadata?.continue ?? "";
    if (!token) return { items, resourceVersion: page.metadata.resourceVersion, requests };
  }
}

/** Replaces `cache` by `items`; answers the changes that makes (ADDED, MODIFIED by resourceVersion, DELETED). */
export function replaceCache(cache: Map<string, KObj>, items: KObj[]): Change[] {
  const changes: Change[] = [];
  const seen = new Set<string>();
  for (const it of items) {
    const k = keyOf(it);
    seen.add(k);
    const prev = cache.get(k);
    cache.set(k, it);
    if (!prev) changes.push([it, "ADDED"]);
    else if (prev.metadata.resourceVersion !== it.metadata.resourceVersion) changes.push([it, "MODIFIED"]);
  }
  for (const [k, prev] of cache) {
    if (!seen.has(k)) {
      cache.delete(k);
      changes.push([prev, "DELETED"]);
    }
  }
  return changes;
}

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
    const { items, resourceVersion } = await listAll(
      (path) => this.client.get(path),
      (params) => this.query(params),
      this.o.pageSize ?? 500,
    );
    for (const [obj, type] of replaceCache(this.cache, items)) this.o.onChange(obj, type);
    this.rv = resourceVersion;
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
