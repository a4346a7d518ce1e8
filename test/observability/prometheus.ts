/** A real Prometheus (Debian's package) on a free loopback port with a temporary TSDB, for tests. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../k8s/cluster.js";
import { prometheusBinary } from "./tools.js";

export interface Prometheus {
  url: string;
  log(): string;
  /** GET /api/v1/query; resolves `data.result`. */
  query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  /** GET /api/v1/alerts; resolves `data.alerts`. */
  alerts(): Promise<
    { labels: Record<string, string>; annotations: Record<string, string>; state: string; value: string }[]
  >;
  close(): Promise<void>;
}

/** Starts Prometheus with `config` (prometheus.yml as an object) and `files` written next to it. */
export async function startPrometheus(config: object, files: Record<string, string> = {}): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), "rft-prometheus-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(join(dir, "prometheus.yml"), JSON.stringify(config, null, 2)); // JSON is YAML
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    prometheusBinary(),
    [
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { cwd: dir, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const api = async (path: string) => {
    const r = await fetch(`${url}${path}`);
    const body = (await r.json()) as { status: string; data: any; error?: string };
    if (body.status !== "success") throw new Error(`${path}: ${body.error ?? r.status}`);
    return body.data;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}:\n${out}`);
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await close();
      throw new Error(`prometheus not ready after 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    log: () => out,
    query: async (q) => (await api(`/api/v1/query?query=${encodeURIComponent(q)}`)).result,
    alerts: async () => (await api("/api/v1/alerts")).alerts,
    close,
  };
}
