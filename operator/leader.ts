/**
 * Lease-based leader election (coordination.k8s.io/v1), client-go's defaults: lease 15 s, renew deadline
 * 10 s, retry 2 s. Acquire when the lease is free or expired (optimistic concurrency on resourceVersion);
 * renew every retry period; losing the lease (no renewal within the deadline) calls onLost, and the
 * process is expected to exit. Releases the lease on a clean stop so a standby takes over at once.
 */
import type { Logger } from "../proto/log.js";
import { isConflict, isNotFound, type KObj, type KubeClient, paths } from "./client.js";

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStarted: () => void;
  onLost: () => void;
  log: Logger;
}

const micro = (d: Date) => d.toISOString().replace("Z", "000Z");

export class LeaderElector {
  leader = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private lastRenew = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly o: LeaderOptions,
  ) {}

  private get duration() {
    return this.o.leaseDurationMs ?? 15_000;
  }

  start(): void {
    void this.tick();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.o.retryPeriodMs ?? 2_000);
  }

  private async tick(): Promise<void> {
    try {
      const ok = await this.tryAcquireOrRenew();
      if (ok) {
        this.lastRenew = Date.now();
        if (!this.leader) {
          this.leader = true;
          this.o.log.info({ identity: this.o.identity }, "became leader");
          this.o.onStarted();
        }
      }
    } catch (e) {
      this.o.log.warn({ err: String(e) }, "leader election: lease update failed");
    }
    if (this.leader && Date.now() - this.lastRenew > (this.o.renewDeadlineMs ?? 10_000)) {
      this.leader = false;
      this.o.log.error("lost the leader lease");
      this.stopped = true;
      this.o.onLost();
      return;
    }
    this.schedule();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace: ns, name, identity } = this.o;
    const now = new Date();
    const lease = await this.client.getOptional(paths.lease(ns, name));
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.round(this.duration / 1000),
      renewTime: micro(now),
    };
    if (!lease) {
      try {
        await this.client.request("POST", paths.lease(ns), {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace: ns },
          spec: { ...spec, acquireTime: micro(now), leaseTransitions: 0 },
        });
        return true;
      } catch (e) {
        if (isConflict(e)) return false;
        throw e;
      }
    }
    const s: KObj = lease.spec ?? {};
    const held = s.holderIdentity && s.holderIdentity !== identity;
    const renewed = s.renewTime ? Date.parse(s.renewTime) : 0;
    const expired = renewed + (s.leaseDurationSeconds ?? 15) * 1000 < now.getTime();
    if (held && !expired) return false;
    const next = {
      ...lease,
      spec: {
        ...s,
        ...spec,
        ...(s.holderIdentity !== identity
          ? { acquireTime: micro(now), leaseTransitions: (s.leaseTransitions ?? 0) + 1 }
          : {}),
      },
    };
    try {
      await this.client.request("PUT", paths.lease(ns, name), next);
      return true;
    } catch (e) {
      if (isConflict(e) || isNotFound(e)) return false;
      throw e;
    }
  }

  /** Stops renewing; when leading, releases the lease (holder cleared) so another replica takes over. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leader) return;
    this.leader = false;
    try {
      const lease = await this.client.getOptional(paths.lease(this.o.namespace, this.o.name));
      if (lease?.spec?.holderIdentity === this.o.identity) {
        await this.client.request("PUT", paths.lease(this.o.namespace, this.o.name), {
          ...lease,
          spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 },
        });
      }
    } catch (e) {
      this.o.log.warn({ err: String(e) }, "could not release the lease");
    }
  }
}
