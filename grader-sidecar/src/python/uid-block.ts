/**
 * Which uids a python sandbox's workers switch to (the sidecar runs as root). Every sandbox claims its own
 * block of SANDBOX_UID_BLOCK uids, so two sandboxes on one host never share a uid (a shared uid reads the
 * other sandbox's temp files and counts against its RLIMIT_NPROC). Claims are held in this process and, for
 * other processes on the host, by a lock file per block in `lockDir` (default: the system temp dir; give
 * sidecars in different containers a shared directory, or user-namespaced pods, to coordinate them too).
 * The search starts at a random block, so uncoordinated sandboxes still rarely collide.
 */
import { randomInt } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Lowest uid handed to workers (within 0..65535, so it is mapped in a Kubernetes user-namespaced pod too). */
export const SANDBOX_UID_MIN = 40_000;
/** Uids per sandbox: the pool rotates through them, one fresh uid per worker spawn. */
export const SANDBOX_UID_BLOCK = 256;
/** Blocks in 40000..65535. */
export const SANDBOX_UID_BLOCKS = Math.floor((65_536 - SANDBOX_UID_MIN) / SANDBOX_UID_BLOCK);

const claimedHere = new Set<number>();

export interface UidBlock {
  /** First uid of the block. */
  base: number;
  size: number;
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Tries to create the block's lock file; takes over one whose process is gone. */
function lock(dir: string, block: number): string | undefined {
  const file = join(dir, `block-${block}`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, "wx", 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") return undefined;
      let pid = 0;
      try {
        pid = Number.parseInt(readFileSync(file, "utf8"), 10);
      } catch {}
      if (pid > 0 && (pid === process.pid ? claimedHere.has(block) : alive(pid))) return undefined;
      try {
        unlinkSync(file); // stale: its process is gone
      } catch {}
    }
  }
  return undefined;
}

/** Claims a free block. `lockDir: null` coordinates within this process only. */
export function claimUidBlock(opts: { lockDir?: string | null } = {}): UidBlock {
  let dir: string | undefined;
  if (opts.lockDir !== null) {
    dir = opts.lockDir ?? join(tmpdir(), "rft-pygrader-uids");
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch {
      dir = undefined;
    }
  }
  const start = randomInt(SANDBOX_UID_BLOCKS);
  for (let k = 0; k < SANDBOX_UID_BLOCKS; k++) {
    const block = (start + k) % SANDBOX_UID_BLOCKS;
    if (claimedHere.has(block)) continue;
    const file = dir === undefined ? undefined : lock(dir, block);
    if (dir !== undefined && file === undefined) continue;
    claimedHere.add(block);
    let released = false;
    return {
      base: SANDBOX_UID_MIN + block * SANDBOX_UID_BLOCK,
      size: SANDBOX_UID_BLOCK,
      release() {
        if (released) return;
        released = true;
        claimedHere.delete(block);
        if (file) {
          try {
            unlinkSync(file);
          } catch {}
        }
      },
    };
  }
  throw new Error(`no free block of ${SANDBOX_UID_BLOCK} sandbox uids in ${SANDBOX_UID_MIN}..65535`);
}
