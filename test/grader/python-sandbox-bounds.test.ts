// Python sandbox bounds (issue 13): every sandbox numbered its uids from 64000 (two sandboxes on one host
// shared uids and read each other's temp files); /dev/shm writes outlived the worker; 60 MiB without a newline
// on the worker's result fd saturated the sidecar. Real workers; the uid and /dev/shm parts need root.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PythonSandbox, RESPONSE_LINE_MAX } from "../../grader-sidecar/src/python/sandbox.js";
import {
  claimUidBlock,
  SANDBOX_UID_BLOCK,
  SANDBOX_UID_BLOCKS,
  SANDBOX_UID_MIN,
} from "../../grader-sidecar/src/python/uid-block.js";
import type { Sample } from "../../proto/graders.js";

const S: Sample = { output_text: "", output_tools: [], choices: [] };
const root = process.getuid?.() === 0;
const boxes: PythonSandbox[] = [];
after(async () => {
  await Promise.all(boxes.map((b) => b.close()));
});
async function sandbox(opts: ConstructorParameters<typeof PythonSandbox>[0] = {}) {
  const b = new PythonSandbox({ size: 1, timeoutMs: 20_000, ...opts });
  boxes.push(b);
  await b.start();
  return b;
}
const UID = "import os\ndef grade(sample, item):\n    return float(os.getuid())\n";

test(
  "two sandboxes on one host use disjoint uids and cannot read each other's files",
  { skip: !root && "needs root" },
  async () => {
    const [a, b] = await Promise.all([sandbox(), sandbox()]);
    const ua = await a.grade(UID, S, {});
    const ub = await b.grade(UID, S, {});
    assert.ok(ua.ok && ub.ok);
    assert.notEqual(ua.value, ub.value);
    for (const u of [ua.value, ub.value]) assert.ok(u >= SANDBOX_UID_MIN && u < 65_536, String(u));
    assert.notEqual(
      Math.floor((ua.value - SANDBOX_UID_MIN) / SANDBOX_UID_BLOCK),
      Math.floor((ub.value - SANDBOX_UID_MIN) / SANDBOX_UID_BLOCK),
    );
    // A file sandbox a's grader writes (mode 0600 under its uid) is out of sandbox b's reach.
    const path = join(tmpdir(), `rft-uid-test-${randomBytes(4).toString("hex")}`);
    try {
      const write = await a.grade(
        `def grade(sample, item):\n    open(item['p'], 'w').write('secret')\n    return 1.0\n`,
        S,
        { p: path },
      );
      assert.deepEqual(write, { ok: true, value: 1 });
      const read = await b.grade(`def grade(sample, item):\n    return float(len(open(item['p']).read()))\n`, S, {
        p: path,
      });
      assert.equal(read.ok, false);
      assert.match(!read.ok ? read.details : "", /PermissionError/);
    } finally {
      rmSync(path, { force: true });
      await Promise.all([a.close(), b.close()]); // their uid blocks are free again
    }
  },
);

test("uid blocks are coordinated between processes through the lock directory", () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-uid-locks-"));
  // Claim every block this process can get, then free one: only that one is left for another process.
  const held = [];
  for (;;) {
    try {
      held.push(claimUidBlock({ lockDir: dir }));
    } catch {
      break;
    }
  }
  assert.equal(held.length, SANDBOX_UID_BLOCKS, "every block is free at the start");
  const victim = held.pop()!;
  victim.release();
  const free = [victim.base];
  try {
    const child = (code: string) =>
      spawnSync(process.execPath, ["--import", "tsx", "-e", code], { encoding: "utf8", cwd: process.cwd() });
    const mod = join(process.cwd(), "grader-sidecar/src/python/uid-block.ts");
    const r = child(
      `import { claimUidBlock } from ${JSON.stringify(mod)}; console.log(claimUidBlock({ lockDir: ${JSON.stringify(dir)} }).base);`,
    );
    assert.equal(r.status, 0, r.stderr);
    // The child exited without releasing: its lock is stale and the block can be claimed again.
    assert.equal(Number(r.stdout.trim()), free[0]);
    const again = claimUidBlock({ lockDir: dir });
    assert.equal(again.base, free[0]);
    // Now every block is held by this (live) process: another process finds none.
    const none = child(
      `import { claimUidBlock } from ${JSON.stringify(mod)}; claimUidBlock({ lockDir: ${JSON.stringify(dir)} });`,
    );
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /no free block of 256 sandbox uids/);
    again.release();
  } finally {
    for (const h of held) h.release();
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  "/dev/shm: a worker's writes stay in its own size-limited tmpfs and vanish with it",
  { skip: !existsSync("/dev/shm") && "no /dev/shm" },
  async () => {
    const box = await sandbox({ shmBytes: 4 * 1024 * 1024 });
    const name = `rft-shm-test-${randomBytes(4).toString("hex")}`;
    const host = join("/dev/shm", name);
    try {
      const write = await box.grade(
        `def grade(sample, item):\n    with open('/dev/shm/' + item['n'], 'wb') as f:\n        f.write(b'x' * 1024 * 1024)\n    return 1.0\n`,
        S,
        { n: name },
      );
      assert.deepEqual(write, { ok: true, value: 1 });
      assert.equal(existsSync(host), false, "the write is not visible on the host's /dev/shm");
      // Past the size: ENOSPC in user code, a runtime error.
      const big = await box.grade(
        `def grade(sample, item):\n    with open('/dev/shm/big', 'wb') as f:\n        f.write(b'x' * 16 * 1024 * 1024)\n    return 1.0\n`,
        S,
        {},
      );
      assert.equal(big.ok, false);
      assert.match(!big.ok ? big.details : "", /No space left on device/);
      assert.match(box.stats().isolation, /\bshm\b/);
    } finally {
      await box.close();
      rmSync(host, { force: true });
    }
    assert.equal(existsSync(host), false);
  },
);

test("the result fd: a line past RESPONSE_LINE_MAX without a newline kills the worker at once", async () => {
  const box = await sandbox();
  const flood = `import os\ndef grade(sample, item):\n    chunk = b'x' * (1 << 20)\n    for _ in range(60):\n        os.write(4, chunk)\n    return 1.0\n`;
  const r = await box.grade(flood, S, {});
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.kind, "server");
  assert.equal(!r.ok && r.kind === "server" && r.type, "protocol_error");
  assert.match(!r.ok ? r.details : "", new RegExp(`response line over ${RESPONSE_LINE_MAX} characters`));
  // The worker was replaced; the next call is served.
  assert.deepEqual(await box.grade("def grade(sample, item):\n    return 0.5\n", S, {}), { ok: true, value: 0.5 });
});
