/**
 * The Prometheus tools of the observability tests: promtool and prometheus from Debian's `prometheus` package
 * (scripts/setup.d/60-observability.sh installs it), and the alert rules' one source.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../k8s/binaries.js";

export const ALERTS_FILE = join(REPO_ROOT, "helm/rft-operator/alerts/rft-alerts.yaml");
export const OPERATIONS_DOC = join(REPO_ROOT, "docs/operations.md");

function tool(name: string): string {
  for (const dir of ["/usr/bin", "/usr/local/bin", "/bin"]) if (existsSync(join(dir, name))) return join(dir, name);
  throw new Error(`${name} not found: scripts/setup.d/60-observability.sh installs Debian's prometheus package`);
}

export const promtool = () => tool("promtool");
export const prometheusBinary = () => tool("prometheus");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command with optional stdin; never rejects (the exit code is in the result). */
export function run(cmd: string, args: string[], opts: { input?: string; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes. */
export function githubAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}
