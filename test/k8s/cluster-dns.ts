/**
 * The real node's cluster DNS: a small stand-in for CoreDNS (which cannot be built here in CI's time), serving
 * what the project's pods look up — the A records of pods' hostnames under a headless Service,
 * `<hostname>.<subdomain>.<namespace>.svc.cluster.local` (an Indexed Job's ranks find each other so), and
 * `<service>.<namespace>.svc.cluster.local` for a Service with a ClusterIP (the node's kube-proxy routes it).
 * Everything else is NXDOMAIN at once (pods have no way out of this machine anyway). UDP on the node IP; the
 * kubelet's clusterDNS points pods at it.
 */
import { createSocket, type Socket } from "node:dgram";
import type { Api, KObject } from "./api.js";

const TYPE_A = 1;
const CLASS_IN = 1;

export interface DnsQuestion {
  id: number;
  flags: number;
  name: string;
  type: number;
  /** Bytes of the question section (echoed in the answer). */
  question: Buffer;
}

/** Parses a query's header and first question; undefined for anything malformed. */
export function parseQuery(msg: Buffer): DnsQuestion | undefined {
  if (msg.length < 17 || msg.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let i = 12;
  while (i < msg.length) {
    const len = msg[i]!;
    if (len === 0) break;
    if (len > 63 || i + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString("ascii"));
    i += 1 + len;
  }
  if (i + 5 > msg.length) return undefined;
  return {
    id: msg.readUInt16BE(0),
    flags: msg.readUInt16BE(2),
    name: labels.join(".").toLowerCase(),
    type: msg.readUInt16BE(i + 1),
    question: msg.subarray(12, i + 5),
  };
}

/** The answer: A records for `ips` when the question asks for A; NXDOMAIN when the name is unknown. */
export function answer(q: DnsQuestion, ips: string[] | undefined): Buffer {
  const known = ips !== undefined;
  const records = known && q.type === TYPE_A ? ips : [];
  const head = Buffer.alloc(12);
  head.writeUInt16BE(q.id, 0);
  // QR, the query's RD bit, RA; rcode 3 (NXDOMAIN) for unknown names.
  head.writeUInt16BE(0x8080 | (q.flags & 0x0100) | (known ? 0 : 3), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(records.length, 6);
  const rrs = records.map((ip) => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(TYPE_A, 2);
    rr.writeUInt16BE(CLASS_IN, 4);
    rr.writeUInt32BE(5, 6);
    rr.writeUInt16BE(4, 10);
    ip.split(".").forEach((o, k) => rr.writeUInt8(Number(o), 12 + k));
    return rr;
  });
  return Buffer.concat([head, q.question, ...rrs]);
}

/** name → IPs, from the cluster's pods and Services (pure). */
export function records(pods: KObject[], services: KObject[], domain = "cluster.local"): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const add = (name: string, ip: string) => out.set(name, [...(out.get(name) ?? []), ip]);
  const headless = new Set(
    services.filter((s) => s.spec?.clusterIP === "None").map((s) => `${s.metadata.namespace}/${s.metadata.name}`),
  );
  for (const s of services) {
    const ip = s.spec?.clusterIP;
    const name = `${s.metadata.name}.${s.metadata.namespace}.svc.${domain}`;
    if (ip && ip !== "None") add(name, ip);
    else out.set(name, out.get(name) ?? []);
  }
  for (const p of pods) {
    const { hostname, subdomain } = p.spec ?? {};
    const ip = p.status?.podIP;
    if (!hostname || !subdomain || !ip || p.metadata.deletionTimestamp) continue;
    if (!headless.has(`${p.metadata.namespace}/${subdomain}`)) continue;
    add(`${hostname}.${subdomain}.${p.metadata.namespace}.svc.${domain}`, ip);
    add(`${subdomain}.${p.metadata.namespace}.svc.${domain}`, ip);
  }
  return out;
}

export interface ClusterDns {
  close(): Promise<void>;
}

/** Serves `records()` of the cluster on host:53 (UDP), refreshed every `refreshMs`. */
export async function startClusterDns(api: Api, host: string, refreshMs = 500): Promise<ClusterDns> {
  let table = new Map<string, string[]>();
  const refresh = async () => {
    const [pods, svcs] = await Promise.all([api.get<KObject>("/api/v1/pods"), api.get<KObject>("/api/v1/services")]);
    table = records(pods.items ?? [], svcs.items ?? []);
  };
  await refresh();
  const timer = setInterval(() => void refresh().catch(() => {}), refreshMs);
  const socket: Socket = createSocket("udp4");
  socket.on("message", (msg, from) => {
    const q = parseQuery(msg);
    if (q) socket.send(answer(q, table.get(q.name)), from.port, from.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(53, host, () => resolve());
  });
  return {
    async close() {
      clearInterval(timer);
      await new Promise<void>((r) => socket.close(() => r()));
    },
  };
}
