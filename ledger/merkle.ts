/**
 * RFC 6962 / RFC 9162 §2.1 Merkle tree: tree hash, inclusion and consistency proofs (generation and
 * verification). Pure; hashes are 32-byte Buffers.
 *   MTH({})  = SHA-256()            leaf = SHA-256(0x00 ‖ d)            node = SHA-256(0x01 ‖ left ‖ right)
 * A tree of n > 1 leaves splits at k, the largest power of two below n; odd leaves are never duplicated.
 */
import { createHash } from "node:crypto";

const LEAF = Buffer.from([0x00]);
const NODE = Buffer.from([0x01]);

export const EMPTY_ROOT: Buffer = createHash("sha256").digest();

export function leafHash(data: Uint8Array): Buffer {
  return createHash("sha256").update(LEAF).update(data).digest();
}
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash("sha256").update(NODE).update(left).update(right).digest();
}

/** Largest power of two strictly below n (n ≥ 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  let k = 1;
  while (k < n) k *= 2;
  return k === n;
}

/** MTH of leaves[start, end) given their leaf hashes. */
export function treeHash(leaves: readonly Buffer[], start = 0, end = leaves.length): Buffer {
  const n = end - start;
  if (n === 0) return EMPTY_ROOT;
  if (n === 1) return leaves[start]!;
  const k = split(n);
  return nodeHash(treeHash(leaves, start, start + k), treeHash(leaves, start + k, end));
}

function checkSize(leaves: readonly Buffer[], size: number): void {
  if (!Number.isSafeInteger(size) || size < 0 || size > leaves.length) {
    throw new RangeError(`tree size ${size} is outside 0..${leaves.length}`);
  }
}

/** Audit path (RFC 6962 §2.1.1 PATH) of leaf `index` in the tree of the first `size` leaves, deepest first. */
export function inclusionProof(leaves: readonly Buffer[], index: number, size = leaves.length): Buffer[] {
  checkSize(leaves, size);
  if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
    throw new RangeError(`leaf index ${index} is outside a tree of size ${size}`);
  }
  const path: Buffer[] = [];
  const rec = (m: number, start: number, end: number): void => {
    const n = end - start;
    if (n <= 1) return;
    const k = split(n);
    if (m < k) {
      rec(m, start, start + k);
      path.push(treeHash(leaves, start + k, end));
    } else {
      rec(m - k, start + k, end);
      path.push(treeHash(leaves, start, start + k));
    }
  };
  rec(index, 0, size);
  return path;
}

/** Consistency proof (RFC 6962 §2.1.2 PROOF) between the trees of the first `size1` and `size2` leaves. */
export function consistencyProof(leaves: readonly Buffer[], size1: number, size2 = leaves.length): Buffer[] {
  checkSize(leaves, size2);
  if (!Number.isSafeInteger(size1) || size1 < 0 || size1 > size2) {
    throw new RangeError(`consistency proof from size ${size1} to ${size2}: sizes must satisfy 0 ≤ size1 ≤ size2`);
  }
  if (size1 === 0 || size1 === size2) return [];
  const proof: Buffer[] = [];
  const sub = (m: number, start: number, end: number, whole: boolean): void => {
    const n = end - start;
    if (m === n) {
      if (!whole) proof.push(treeHash(leaves, start, end));
      return;
    }
    const k = split(n);
    if (m <= k) {
      sub(m, start, start + k, whole);
      proof.push(treeHash(leaves, start + k, end));
    } else {
      sub(m - k, start + k, end, false);
      proof.push(treeHash(leaves, start, start + k));
    }
  };
  sub(size1, 0, size2, true);
  return proof;
}

/**
 * The proof walk that inclusion (RFC 9162 §2.1.3.2) and consistency (§2.1.4.2) verification share: node `fn` of a
 * tree whose last node is `sn` climbs to the root, taking one proof element per level at which it has a sibling:
 * `visit(c, true)` when the sibling is on the left (fn is a right child, or the last node at its level), `visit(c,
 * false)` when it is on the right. "long": elements left over at the root; "short": the root not reached;
 * "element": an element that is not 32 bytes (checked as it is reached).
 */
function walkProof(
  fn: number,
  sn: number,
  proof: readonly Uint8Array[],
  visit: (c: Uint8Array, left: boolean) => void,
): "ok" | "long" | "short" | "element" {
  for (const c of proof) {
    if (c.length !== 32) return "element";
    if (sn === 0) return "long";
    if (fn % 2 === 1 || fn === sn) {
      visit(c, true);
      // A last node with no right sibling rises through the levels where it is a left child.
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      visit(c, false);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? "ok" : "short";
}

/** Root implied by an inclusion proof (RFC 9162 §2.1.3.2); throws with the reason when the proof is malformed. */
export function rootFromInclusionProof(
  index: number,
  size: number,
  leaf: Uint8Array,
  proof: readonly Uint8Array[],
): Buffer {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) {
    throw new Error(`leaf index ${index} is outside a tree of size ${size}`);
  }
  if (leaf.length !== 32) throw new Error("leaf hash is not 32 bytes");
  let r: Buffer = Buffer.from(leaf);
  const walk = walkProof(index, size - 1, proof, (p, left) => {
    r = left ? nodeHash(p, r) : nodeHash(r, p);
  });
  if (walk === "element") throw new Error("proof element is not 32 bytes");
  if (walk === "long") throw new Error("proof is longer than the tree is deep");
  if (walk === "short") throw new Error("proof is shorter than the tree is deep");
  return r;
}

/** True when `proof` shows leaf `index` (hash `leaf`) is in the tree of `size` leaves with root `root`. */
export function verifyInclusion(
  index: number,
  size: number,
  leaf: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  try {
    return rootFromInclusionProof(index, size, leaf, proof).equals(root);
  } catch {
    return false;
  }
}

/** Why a consistency proof fails (RFC 9162 §2.1.4.2), or null when the tree of size2 extends the tree of size1. */
export function consistencyError(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): string | null {
  if (!Number.isSafeInteger(size1) || !Number.isSafeInteger(size2) || size1 < 0 || size2 < size1) {
    return `size ${size2} is smaller than size ${size1} (rollback)`;
  }
  if (size1 === size2) {
    if (proof.length !== 0) return "proof must be empty for equal sizes";
    return Buffer.from(root1).equals(root2) ? null : "same size, different roots (fork)";
  }
  if (size1 === 0) return proof.length === 0 ? null : "proof must be empty from the empty tree";
  if (proof.length === 0) return "empty proof";
  if (proof.some((p) => p.length !== 32)) return "proof element is not 32 bytes";
  const path = [...proof];
  if (isPowerOfTwo(size1)) path.unshift(root1);
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Buffer = Buffer.from(path[0]!);
  let sr: Buffer = Buffer.from(path[0]!);
  const walk = walkProof(fn, sn, path.slice(1), (c, left) => {
    if (left) fr = nodeHash(c, fr);
    sr = left ? nodeHash(c, sr) : nodeHash(sr, c);
  });
  if (walk === "element") return "proof element is not 32 bytes"; // (checked above: never)
  if (walk === "long") return "proof is longer than needed";
  if (walk === "short") return "proof is shorter than needed";
  if (!fr.equals(root1)) return `proof does not lead to the root of size ${size1}`;
  if (!sr.equals(root2)) return `proof does not lead to the root of size ${size2}`;
  return null;
}

export function verifyConsistency(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): boolean {
  return consistencyError(size1, size2, proof, root1, root2) === null;
}

/**
 * An append-only log of leaf hashes with an O(log n) running root (a stack of perfect-subtree roots, which is
 * exactly RFC 6962's left-heavy split) and proofs over any earlier size.
 */
export class MerkleLog {
  readonly leaves: Buffer[] = [];
  private readonly frontier: { height: number; hash: Buffer }[] = [];

  get size(): number {
    return this.leaves.length;
  }

  /** Appends one leaf by its data (hashed with the 0x00 prefix); returns its index. */
  appendData(data: Uint8Array): number {
    return this.appendLeafHash(leafHash(data));
  }

  appendLeafHash(h: Buffer): number {
    this.leaves.push(h);
    let node = { height: 0, hash: h };
    while (this.frontier.length > 0 && this.frontier[this.frontier.length - 1]!.height === node.height) {
      const left = this.frontier.pop()!;
      node = { height: node.height + 1, hash: nodeHash(left.hash, node.hash) };
    }
    this.frontier.push(node);
    return this.leaves.length - 1;
  }

  /** Root of the first `size` leaves (default: all). */
  root(size = this.leaves.length): Buffer {
    if (size === this.leaves.length) {
      if (this.frontier.length === 0) return EMPTY_ROOT;
      let r = this.frontier[this.frontier.length - 1]!.hash;
      for (let i = this.frontier.length - 2; i >= 0; i--) r = nodeHash(this.frontier[i]!.hash, r);
      return r;
    }
    checkSize(this.leaves, size);
    return treeHash(this.leaves, 0, size);
  }

  inclusionProof(index: number, size = this.leaves.length): Buffer[] {
    return inclusionProof(this.leaves, index, size);
  }

  consistencyProof(size1: number, size2 = this.leaves.length): Buffer[] {
    return consistencyProof(this.leaves, size1, size2);
  }
}
