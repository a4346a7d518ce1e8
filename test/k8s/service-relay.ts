/**
 * A stand-in for kube-proxy, for tests on the process kubelet only (it has no kube-proxy and no DNS: Service
 * ClusterIPs route nowhere, pod IPs exist only inside the pods' network namespaces). `url(ns, service)` resolves
 * the Service's endpoints as kube-proxy would (its selector → a Ready pod → the target port, named or numbered)
 * and answers a host loopback URL whose every connection is piped into that pod's network namespace
 * (`ip netns exec <pod> node`, one process per connection). Production code uses the Service's DNS name.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type Server } from "node:net";
import type { KObject } from "./api.js";
import type { Cluster } from "./cluster.js";

const PIPE = `const s = require("node:net").connect(Number(process.argv[1]), "127.0.0.1");
process.stdin.pipe(s); s.pipe(process.stdout);
s.on("close", () => process.exit(0)); s.on("error", () => process.exit(1));`;

export class ServiceRelay {
  private readonly relays = new Map<string, { server: Server; url: string }>();
  private readonly children = new Set<ChildProcess>();

  constructor(private readonly cluster: Cluster) {}

  /** A loopback URL (`http://127.0.0.1:PORT`) reaching a Ready pod behind the Service. */
  async url(namespace: string, service: string): Promise<string> {
    const svc = await this.cluster.getJson("svc", "-n", namespace, service);
    const selector = Object.entries(svc.spec.selector as Record<string, string>)
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    const pods = (await this.cluster.getJson("pods", "-n", namespace, "-l", selector)).items as KObject[];
    const pod = pods.find((p) =>
      (p.status?.conditions ?? []).some((c: KObject) => c.type === "Ready" && c.status === "True"),
    );
    if (!pod) throw new Error(`service ${namespace}/${service} has no ready endpoint`);
    const target = svc.spec.ports[0].targetPort ?? svc.spec.ports[0].port;
    const port =
      typeof target === "number"
        ? target
        : (pod.spec.containers as KObject[]).flatMap((c) => (c.ports ?? []) as KObject[]).find((p) => p.name === target)
            ?.containerPort;
    if (!port) throw new Error(`service ${namespace}/${service}: no container port named ${target}`);
    const netns = this.cluster.kubelet?.podNetns(namespace, pod.metadata.name);
    if (!netns) throw new Error(`pod ${namespace}/${pod.metadata.name} does not run on the process kubelet`);
    const key = `${netns}:${port}`;
    let relay = this.relays.get(key);
    if (!relay) {
      const server = createServer((sock) => {
        const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", PIPE, String(port)], {
          stdio: ["pipe", "pipe", "ignore"],
        });
        this.children.add(child);
        child.once("exit", () => {
          this.children.delete(child);
          sock.destroy();
        });
        sock.on("error", () => child.kill());
        sock.once("close", () => child.kill());
        sock.pipe(child.stdin!);
        child.stdout!.pipe(sock);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
      const addr = server.address() as { port: number };
      relay = { server, url: `http://127.0.0.1:${addr.port}` };
      this.relays.set(key, relay);
    }
    return relay.url;
  }

  async close(): Promise<void> {
    for (const c of this.children) c.kill();
    await Promise.all([...this.relays.values()].map((r) => new Promise<void>((ok) => r.server.close(() => ok()))));
    this.relays.clear();
  }
}
