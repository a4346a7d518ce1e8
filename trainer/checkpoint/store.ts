/**
 * Checkpoint storage with atomic writes. A checkpoint is a directory written under a temporary name, each file
 * fsynced, a `checkpoint.json` listing every file's SHA-256 written last, then renamed into place; the index
 * (`index.json`) is replaced by rename too. A crash at any point leaves either the old state or the new one:
 * a half-written directory is never listed, and `load` re-checks every digest before trusting a checkpoint.
 */
import { createHash } from "node:crypto";
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import { type CheckpointInfo, retained } from "./retention.js";

export class CheckpointError extends Error {}

/** A write to the output directory (the job's events file) failed: the message names the file. */
export class OutputWriteError extends Error {}

/** Appends to a file of the output directory; a failure (a full disk) throws an OutputWriteError naming it. */
export function appendOutput(path: string, text: string) {
  try {
    appendFileSync(path, text);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOSPC" ? "no space left on device (ENOSPC)" : err.message;
    throw new OutputWriteError(`cannot write ${path}: ${why}`, { cause: e });
  }
}

const MANIFEST = "checkpoint.json";
const INDEX = "index.json";

function fsyncPath(path: string) {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes a file and fsyncs it. */
export function writeFileDurable(path: string, data: string | Uint8Array) {
  const fd = openSync(path, "w");
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces a file atomically: write a sibling, fsync, rename over, fsync the directory. */
export function replaceFileAtomic(path: string, data: string | Uint8Array) {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileDurable(tmp, data);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOSPC" ? "no space left on device (ENOSPC)" : err.message;
    throw new OutputWriteError(`cannot write ${path}: ${why}`, { cause: e });
  }
  renameSync(tmp, path);
  fsyncPath(join(path, ".."));
}

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

const sha256File = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

export interface CheckpointWrite {
  info: Omit<CheckpointInfo, "name">;
  /** Fills the directory (model weights, optimizer state, trainer state). */
  write(dir: string): Promise<void>;
}

export class CheckpointStore {
  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true });
    // Leftovers of a crash mid-write are never valid checkpoints.
    for (const name of readdirSync(root))
      if (name.includes(".partial-")) rmSync(join(root, name), { recursive: true, force: true });
  }

  list(): CheckpointInfo[] {
    const p = join(this.root, INDEX);
    if (!existsSync(p)) return [];
    return JSON.parse(readFileSync(p, "utf8")) as CheckpointInfo[];
  }

  dir(name: string): string {
    return join(this.root, name);
  }

  /** Removes a checkpoint (index first, by rename, then its directory). */
  remove(name: string) {
    replaceFileAtomic(
      join(this.root, INDEX),
      JSON.stringify(
        this.list().filter((x) => x.name !== name),
        null,
        2,
      ),
    );
    rmSync(join(this.root, name), { recursive: true, force: true });
  }

  /**
   * Saves a checkpoint atomically, then applies the retention policy. Returns its info. A write that fails (a
   * full disk) removes the partial directory and throws a CheckpointError naming the file; the checkpoints
   * already saved and the index are untouched.
   */
  async save(c: CheckpointWrite): Promise<CheckpointInfo> {
    const name = `step-${String(c.info.step).padStart(6, "0")}${c.info.reason === "eval" ? "" : `-${c.info.reason}`}`;
    const partial = join(this.root, `${name}.partial-${process.pid}`);
    try {
      return await this.saveAt(c, name, partial);
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      rmSync(partial, { recursive: true, force: true });
      const err = e as NodeJS.ErrnoException;
      const file = err.path ?? partial;
      const why =
        err.code === "ENOSPC"
          ? "no space left on device (ENOSPC)"
          : `${err.code ? `${err.code}: ` : ""}${err.message ?? String(e)}`;
      throw new CheckpointError(`cannot write checkpoint ${name}: ${file}: ${why}`, { cause: e });
    }
  }

  private async saveAt(c: CheckpointWrite, name: string, partial: string): Promise<CheckpointInfo> {
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true });
    await c.write(partial);
    const files = listFiles(partial).sort();
    for (const f of files) fsyncPath(f);
    const digests = Object.fromEntries(files.map((f) => [relative(partial, f), sha256File(f)]));
    const info: CheckpointInfo = { ...c.info, name };
    writeFileDurable(join(partial, MANIFEST), JSON.stringify({ ...info, files: digests }, null, 2));
    fsyncPath(partial);
    const final = join(this.root, name);
    rmSync(final, { recursive: true, force: true });
    renameSync(partial, final);
    fsyncPath(this.root);
    const all = [...this.list().filter((x) => x.name !== name), info];
    const keep = retained(all);
    const kept = all.filter((x) => keep.has(x.name)).sort((a, b) => a.step - b.step);
    replaceFileAtomic(join(this.root, INDEX), JSON.stringify(kept, null, 2));
    for (const x of all) if (!keep.has(x.name)) rmSync(join(this.root, x.name), { recursive: true, force: true });
    return info;
  }

  /** Verifies a checkpoint's files against its manifest; throws CheckpointError naming the first problem. */
  verify(name: string): CheckpointInfo {
    const dir = join(this.root, name);
    const mp = join(dir, MANIFEST);
    if (!existsSync(mp)) throw new CheckpointError(`${dir}: no ${MANIFEST} (incomplete checkpoint)`);
    const manifest = JSON.parse(readFileSync(mp, "utf8")) as CheckpointInfo & { files: Record<string, string> };
    for (const [file, digest] of Object.entries(manifest.files)) {
      const p = join(dir, file);
      if (!existsSync(p)) throw new CheckpointError(`${dir}: ${file} is missing`);
      if (sha256File(p) !== digest) throw new CheckpointError(`${dir}: ${file} does not match its digest`);
    }
    const { files: _f, ...info } = manifest;
    return info;
  }

  /** The latest checkpoint that verifies (the resume point), or null. */
  latest(): CheckpointInfo | null {
    const all = this.list().sort((a, b) => b.step - a.step);
    for (const c of all) {
      try {
        return this.verify(c.name);
      } catch {
        // fall back to an earlier checkpoint
      }
    }
    return null;
  }
}
