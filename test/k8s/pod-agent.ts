/**
 * The process kubelet's helper inside one pod's network namespace (its "pause container"), started by
 * ./pod-network.ts through `ip netns exec`:
 *  - relays the host's loopback ports listed in RFT_AGENT_PORTS ("PORT=SOCKET,…") into the pod: it listens on
 *    127.0.0.1:PORT in the pod and forwards each connection over the Unix socket SOCKET, which the kubelet
 *    serves in the host namespace and connects to the host's 127.0.0.1:PORT (Unix sockets cross network
 *    namespaces; nothing here touches an address outside loopback and the pod network);
 *  - runs network probes (tcpSocket, httpGet, grpc) for the kubelet, asked over the IPC channel.
 * It exits when the kubelet goes away (the IPC channel closes).
 */
import { connect, createServer } from "node:net";
import { type NetProbe, runNetProbe } from "./probes.js";

if (!process.send) {
  console.error("pod-agent: must be started by the kubelet with an IPC channel");
  process.exit(2);
}

const listening: Promise<void>[] = [];
for (const entry of (process.env.RFT_AGENT_PORTS ?? "").split(",").filter(Boolean)) {
  const eq = entry.indexOf("=");
  const port = Number(entry.slice(0, eq));
  const socket = entry.slice(eq + 1);
  const server = createServer((inbound) => {
    const outbound = connect(socket);
    inbound.pipe(outbound).pipe(inbound);
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
  });
  listening.push(
    new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    }),
  );
}

process.on("message", (msg: { id: number; probe: NetProbe }) => {
  runNetProbe(msg.probe).then(
    (result) => process.send?.({ id: msg.id, result }),
    (e: Error) => process.send?.({ id: msg.id, result: { ok: false, message: e.message } }),
  );
});
process.on("disconnect", () => process.exit(0));

Promise.all(listening).then(
  () => process.send?.({ ready: true }),
  (e: Error) => {
    process.send?.({ ready: false, error: e.message });
    process.exit(1);
  },
);
