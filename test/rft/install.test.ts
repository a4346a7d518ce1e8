/**
 * `rft` as an installed command: the package `npm pack` makes installs globally (into a temporary prefix) and its
 * `rft` works, python graders included (the worker ships in the package); setup's step 90 puts `rft` on the PATH
 * both ways it can (npm link into npm's global prefix, or the ~/.local/bin shim). Needs npm and the registry npm ci
 * used (the global install resolves the package's dependencies; --prefer-offline takes them from npm's cache).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

const root = process.cwd();
const tmp = mkdtempSync(join(tmpdir(), "rft-install-"));
/**
 * The environment of a new shell: `npm test` exports npm's own config (npm_config_prefix=/usr, …) to its
 * scripts, which would override the NPM_CONFIG_* a test sets; a user's shell has none of it.
 */
const shellEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)));
const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = root) =>
  spawnSync(cmd, args, { cwd, encoding: "utf8", env: { ...shellEnv, RFT_LOG_LEVEL: "silent", ...env } });

/** A new shell's PATH: the one folder under test, then the system's (no node_modules/.bin). */
const shellPath = (bin: string) => `${bin}:${process.env.PATH}`;

const python = join(root, ".venv", "bin", "python");
const pythonGrader = JSON.stringify({
  type: "python",
  name: "exact",
  source: 'def grade(sample, item):\n    return 1.0 if sample["output_text"] == item["answer"] else 0.0\n',
});

test("npm pack makes a package that `npm install -g` turns into a working rft", () => {
  const pack = run("npm", ["pack", "--json", "--pack-destination", tmp]);
  assert.equal(pack.status, 0, pack.stderr);
  const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
  const files = info!.files.map((f) => f.path);
  for (const f of [
    "dist/cli/rft.js",
    "proto/grader.proto",
    "proto/collective.proto",
    "grader-sidecar/python/worker.py",
  ])
    assert.ok(files.includes(f), `the package lacks ${f}`);
  assert.deepEqual(
    files.filter((f) => /^(test|bench|examples)\/|\.ts$|\.map$/.test(f)),
    [],
    "tests, sources and source maps stay out of the package",
  );

  const prefix = join(tmp, "global");
  const install = run("npm", [
    "install",
    "-g",
    "--prefix",
    prefix,
    "--prefer-offline",
    "--no-audit",
    "--no-fund",
    join(tmp, info!.filename),
  ]);
  assert.equal(install.status, 0, install.stderr);
  const bin = join(prefix, "bin");
  const help = run("rft", ["--help"], { PATH: shellPath(bin) }, tmp);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Usage: rft /);
  assert.match(help.stdout, /run \[options\] <manifest>/);

  // The installed copy, not this checkout: its package root is under the prefix.
  assert.ok(realpathSync(join(bin, "rft")).startsWith(realpathSync(prefix)));
  const grade = run(
    "rft",
    ["grade", "--grader", pythonGrader, "--sample", "42", "--item", '{"answer":"42"}'],
    { PATH: shellPath(bin), RFT_PYTHON: python },
    tmp,
  );
  assert.equal(grade.status, 0, grade.stderr);
  assert.equal(JSON.parse(grade.stdout).reward, 1);
});

test("setup's step 90 links rft into npm's global prefix when it is writable", () => {
  const prefix = join(tmp, "npm-prefix");
  const r = run("bash", ["scripts/setup.d/90-rft-on-path.sh"], { NPM_CONFIG_PREFIX: prefix, RFT_LINK: "auto" });
  assert.equal(r.status, 0, r.stderr);
  const bin = join(prefix, "bin");
  assert.match(r.stderr, new RegExp(`${bin} is not on this shell's PATH`));
  // The link points at this checkout, so a rebuild is what `rft` runs next.
  assert.equal(realpathSync(join(bin, "rft")), realpathSync(join(root, "dist", "cli", "rft.js")));
  const v = run("rft", ["--version"], { PATH: shellPath(bin) }, tmp);
  assert.equal(v.status, 0, v.stderr);
  assert.equal(v.stdout.trim(), JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version);
});

test("setup's step 90 writes a shim when told to (npm's prefix not writable), and RFT_LINK=0 leaves the PATH alone", () => {
  const binDir = join(tmp, "home", ".local", "bin");
  const r = run("bash", ["scripts/setup.d/90-rft-on-path.sh"], {
    RFT_LINK: "shim",
    RFT_BIN_DIR: binDir,
    PATH: shellPath(binDir),
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /is on the PATH/);
  const help = run("rft", ["--help"], { PATH: shellPath(binDir) }, tmp);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Usage: rft /);

  const off = join(tmp, "off");
  const none = run("bash", ["scripts/setup.d/90-rft-on-path.sh"], { RFT_LINK: "0", RFT_BIN_DIR: off });
  assert.equal(none.status, 0, none.stderr);
  assert.equal(existsSync(off), false);
  const bad = run("bash", ["scripts/setup.d/90-rft-on-path.sh"], { RFT_LINK: "yes" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /RFT_LINK=yes: use auto, npm, shim or 0/);
});
