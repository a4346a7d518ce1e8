/** Object ids in OpenAI's shapes: `file-…`, `ftjob-…`, `ftevent-…`, `ftckpt_…`, `eval_…`, `evalrun_…`, `outputitem_…`. */
import { randomBytes } from "node:crypto";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** `prefix` + 24 random base62 characters (rejection sampling: no modulo bias). */
export function newId(prefix: string, length = 24): string {
  let out = "";
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < 248 && out.length < length) out += ALPHABET[b % 62];
    }
  }
  return prefix + out;
}

/** Ids clients send back: bounded, and only characters our ids use (so one is safe as a file name). */
export function isIdOf(prefix: string, id: string): boolean {
  return id.length <= prefix.length + 64 && id.startsWith(prefix) && /^[A-Za-z0-9_-]+$/.test(id);
}

export const now = () => Math.floor(Date.now() / 1000);
