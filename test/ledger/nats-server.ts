/**
 * Starts a real nats-server (JetStream, file store in a temp dir) on a free port, for the ledger tests; with
 * `auth`, in operator (JWT) mode: its config includes the `auth.conf` the operator writes for the chart's NATS.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function natsServerBinary(): string {
  for (const p of ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"])
    if (existsSync(p)) return p;
  return "nats-server";
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export class NatsServer {
  private proc: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    readonly storeDir: string,
    /** The auth.conf text (operator/nats-credentials.ts serverAuthConfig), or none: no authentication. */
    readonly auth?: string,
    /** PEM files of the server's certificate and key: clients must speak TLS. */
    readonly tls?: { certFile: string; keyFile: string },
    /** The address it listens on (loopback unless told, e.g. the real node's IP for pods). */
    readonly host = "127.0.0.1",
  ) {}

  get url(): string {
    return `nats://${this.host}:${this.port}`;
  }

  /** Starts one on a free port, or on `port` (a test that first needs NATS to be down there). */
  static async start(
    port?: number,
    opts: { auth?: string; tls?: { certFile: string; keyFile: string }; host?: string } = {},
  ): Promise<NatsServer> {
    const dir = mkdtempSync(join(tmpdir(), "rft-nats-"));
    const s = new NatsServer(port ?? (await freePort()), dir, opts.auth, opts.tls, opts.host);
    await s.startProcess();
    return s;
  }

  async startProcess(): Promise<void> {
    const args = ["-js", "-sd", this.storeDir, "-a", this.host, "-p", String(this.port)];
    if (this.auth !== undefined || this.tls) {
      // As the chart does it: nats.conf includes the auth.conf beside it, and names the certificate files.
      const conf: string[] = [];
      if (this.auth !== undefined) {
        writeFileSync(join(this.storeDir, "auth.conf"), this.auth);
        conf.push("include ./auth.conf");
      }
      if (this.tls) conf.push(`tls { cert_file: "${this.tls.certFile}", key_file: "${this.tls.keyFile}", timeout: 2 }`);
      writeFileSync(join(this.storeDir, "nats.conf"), `${conf.join("\n")}\n`);
      args.push("-c", join(this.storeDir, "nats.conf"));
    }
    const proc = spawn(natsServerBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    await new Promise<void>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`nats-server did not start:\n${out}`)), 15_000);
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", onData);
      proc.once("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot run nats-server (scripts/setup.d/30-nats.sh installs it): ${e.message}`));
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited with ${code}:\n${out}`));
      });
    });
  }

  /** Kills the server (SIGKILL: no clean shutdown) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      p.kill(signal);
    });
    this.proc = null;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.startProcess();
  }

  async stop(): Promise<void> {
    await this.kill("SIGTERM");
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}
