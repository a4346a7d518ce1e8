/**
 * `npm run cluster:up`: starts the harness cluster (etcd, kube-apiserver, kube-controller-manager and the
 * process kubelet), prints `export KUBECONFIG=…` and runs until Ctrl-C (or SIGTERM), then tears it all down.
 * Flags: --dir DIR (keep data and logs there), --no-kubelet, --host-port PORT (repeatable: a host loopback
 * port pods reach at 127.0.0.1:PORT), --image PATTERN=COMMAND (repeatable: e.g. 'myimg:*=python3 -m app'),
 * --gang (also start Kueue and JobSet: ./gang.ts),
 * --real-node (a real kubelet + containerd + kube-scheduler instead of the process kubelet: ./real-node.ts).
 */
import { parseArgs } from "node:util";
import { startCluster } from "./cluster.js";
import { startGang } from "./gang.js";
import type { ImageEntry } from "./kubelet.js";

const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    "no-kubelet": { type: "boolean", default: false },
    "host-port": { type: "string", multiple: true, default: [] },
    image: { type: "string", multiple: true, default: [] },
    gang: { type: "boolean", default: false },
    "real-node": { type: "boolean", default: false },
  },
});

const images: Record<string, ImageEntry> = {};
for (const spec of values.image ?? []) {
  const eq = spec.indexOf("=");
  if (eq < 0) throw new Error(`--image wants PATTERN=COMMAND, got ${spec}`);
  images[spec.slice(0, eq)] = {
    entrypoint: spec
      .slice(eq + 1)
      .split(/\s+/)
      .filter(Boolean),
  };
}

const cluster = await startCluster({
  dir: values.dir,
  kubelet: values["no-kubelet"] ? false : { images, hostPorts: (values["host-port"] ?? []).map(Number) },
  realNode: values["real-node"],
});
const gang = values.gang ? await startGang(cluster) : undefined;
process.stdout.write(
  `export KUBECONFIG=${cluster.kubeconfig}\n` +
    `# server ${cluster.server}; kubectl: ${cluster.binaries.kubectl}\n` +
    `# logs: ${cluster.dir}/logs (control plane), ${cluster.dir}/kubelet/pods/*/logs (containers)\n` +
    (gang ? `# Kueue and JobSet: logs ${gang.logs.kueue}, ${gang.logs.jobset}\n` : "") +
    (cluster.realNode ? `# real node ${cluster.realNode.nodeName}, image ${cluster.realNode.image}\n` : "") +
    "# Ctrl-C stops the cluster.\n",
);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  process.stderr.write("stopping the cluster…\n");
  await gang?.close();
  await cluster.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
