/**
 * Network probes as the kubelet runs them (tcpSocket, httpGet, grpc health), run from inside a pod's network
 * namespace by ./pod-agent.ts. Exec probes run in ./pod-worker.ts through nsenter.
 */
import http from "node:http";
import https from "node:https";
import { connect } from "node:net";

export type NetProbe =
  | { kind: "tcp"; host: string; port: number; timeoutMs: number }
  | {
      kind: "http";
      scheme: "HTTP" | "HTTPS";
      host: string;
      port: number;
      path: string;
      headers: Record<string, string>;
      timeoutMs: number;
    }
  | { kind: "grpc"; host: string; port: number; service: string; timeoutMs: number };

export interface ProbeResult {
  ok: boolean;
  message: string;
}

function tcp(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, message: `dial tcp ${host}:${port}: i/o timeout` });
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      s.destroy();
      resolve({ ok: true, message: "" });
    });
    s.once("error", (e) => {
      clearTimeout(t);
      resolve({ ok: false, message: `dial tcp ${host}:${port}: ${e.message}` });
    });
  });
}

function httpGet(p: Extract<NetProbe, { kind: "http" }>): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const mod = p.scheme === "HTTPS" ? https : http;
    const req = mod.get(
      {
        host: p.host,
        port: p.port,
        path: p.path || "/",
        headers: { "user-agent": "kube-probe/rft-harness", ...p.headers },
        timeout: p.timeoutMs,
        rejectUnauthorized: false,
      },
      (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        resolve(
          code >= 200 && code < 400
            ? { ok: true, message: "" }
            : { ok: false, message: `HTTP probe failed with statuscode: ${code}` },
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error("context deadline exceeded")));
    req.on("error", (e) => resolve({ ok: false, message: `Get "${p.host}:${p.port}${p.path}": ${e.message}` }));
  });
}

async function grpcHealth(host: string, port: number, service: string, timeoutMs: number): Promise<ProbeResult> {
  const grpc = await import("@grpc/grpc-js");
  const client = new grpc.Client(
    `${host.includes(":") ? `[${host}]` : host}:${port}`,
    grpc.credentials.createInsecure(),
  );
  // grpc.health.v1.HealthCheckRequest { string service = 1; } and HealthCheckResponse { enum status = 1; }
  const encode = (s: string) => {
    const b = Buffer.from(s, "utf8");
    return b.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, b.length]), b]);
  };
  const decode = (b: Buffer) => (b.length >= 2 && b[0] === 0x08 ? (b[1] ?? 0) : 0);
  try {
    const status = await new Promise<number>((resolve, reject) => {
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (s: string) => encode(s),
        (b: Buffer) => decode(b),
        service,
        { deadline: Date.now() + timeoutMs },
        (err, value) => (err ? reject(err) : resolve(value ?? 0)),
      );
    });
    // 1 = SERVING
    return status === 1
      ? { ok: true, message: "" }
      : {
          ok: false,
          message: `service unhealthy (responded with "${["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"][status] ?? status}")`,
        };
  } catch (e) {
    return {
      ok: false,
      message: `timeout: failed to connect service "${host}:${port}" within ${timeoutMs / 1000}s: ${(e as Error).message}`,
    };
  } finally {
    client.close();
  }
}

export function runNetProbe(p: NetProbe): Promise<ProbeResult> {
  switch (p.kind) {
    case "tcp":
      return tcp(p.host, p.port, p.timeoutMs);
    case "http":
      return httpGet(p);
    case "grpc":
      return grpcHealth(p.host, p.port, p.service, p.timeoutMs);
  }
}
