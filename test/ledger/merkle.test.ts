import assert from "node:assert/strict";
import { test } from "node:test";
import {
  consistencyError,
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  MerkleLog,
  rootFromInclusionProof,
  treeHash,
  verifyConsistency,
  verifyInclusion,
} from "../../ledger/merkle.js";

// Known values of the RFC 6962 test tree used by Certificate Transparency, Trillian and transparency-dev/merkle:
// eight leaves, the roots of every prefix, and some audit paths and consistency proofs.
const h = (s: string) => Buffer.from(s, "hex");
const LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"].map(
  h,
);
const ROOTS = [
  "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
// [leaf index (0-based), tree size, path]
const INCLUSION: [number, number, string[]][] = [
  [0, 1, []],
  [
    0,
    8,
    [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
  ],
  [
    5,
    8,
    [
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
  ],
  [2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]],
  [
    1,
    5,
    [
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
  ],
];
const CONSISTENCY: [number, number, string[]][] = [
  [1, 1, []],
  [
    1,
    8,
    [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
  ],
  [
    6,
    8,
    [
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
  ],
  [
    2,
    5,
    [
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
  ],
  [
    6,
    7,
    [
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
  ],
];
const hashes = LEAVES.map(leafHash);

test("tree hash: empty tree and the roots of every prefix of the test tree", () => {
  assert.equal(EMPTY_ROOT.toString("hex"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const log = new MerkleLog();
  assert.deepEqual(log.root(), EMPTY_ROOT);
  for (let n = 1; n <= 8; n++) {
    assert.equal(treeHash(hashes, 0, n).toString("hex"), ROOTS[n - 1], `size ${n}`);
    log.appendData(LEAVES[n - 1]!);
    assert.equal(log.root().toString("hex"), ROOTS[n - 1], `incremental size ${n}`);
  }
  for (let n = 1; n <= 8; n++) assert.equal(log.root(n).toString("hex"), ROOTS[n - 1]);
});

test("inclusion proofs: generated paths equal the known ones and verify", () => {
  for (const [i, n, path] of INCLUSION) {
    const got = inclusionProof(hashes, i, n).map((b) => b.toString("hex"));
    assert.deepEqual(got, path, `leaf ${i} size ${n}`);
    assert.ok(verifyInclusion(i, n, hashes[i]!, path.map(h), h(ROOTS[n - 1]!)));
  }
});

test("consistency proofs: generated proofs equal the known ones and verify", () => {
  for (const [m, n, proof] of CONSISTENCY) {
    assert.deepEqual(
      consistencyProof(hashes, m, n).map((b) => b.toString("hex")),
      proof,
      `${m}→${n}`,
    );
    assert.equal(consistencyError(m, n, proof.map(h), h(ROOTS[m - 1]!), h(ROOTS[n - 1]!)), null, `${m}→${n}`);
  }
});

test("every proof over trees up to 40 leaves round-trips", () => {
  const leaves = Array.from({ length: 40 }, (_, i) => leafHash(Buffer.from(`leaf ${i}`)));
  for (let n = 1; n <= 40; n++) {
    const root = treeHash(leaves, 0, n);
    for (let i = 0; i < n; i++) assert.ok(verifyInclusion(i, n, leaves[i]!, inclusionProof(leaves, i, n), root));
    for (let m = 0; m <= n; m++) {
      assert.equal(
        consistencyError(m, n, consistencyProof(leaves, m, n), treeHash(leaves, 0, m), root),
        null,
        `${m}→${n}`,
      );
    }
  }
});

test("corrupted inclusion proofs are rejected", () => {
  const [i, n, path] = INCLUSION[2]!;
  const root = h(ROOTS[n - 1]!);
  const p = path.map(h);
  const leaf = hashes[i]!;
  const bad: [string, () => boolean][] = [
    ["index - 1", () => verifyInclusion(i - 1, n, leaf, p, root)],
    ["index + 1", () => verifyInclusion(i + 1, n, leaf, p, root)],
    ["index ^ 2", () => verifyInclusion(i ^ 2, n, leaf, p, root)],
    ["size * 2", () => verifyInclusion(i, n * 2, leaf, p, root)],
    ["size / 2", () => verifyInclusion(i, n / 2, leaf, p, root)],
    ["wrong leaf", () => verifyInclusion(i, n, leafHash(Buffer.from("x")), p, root)],
    ["empty root", () => verifyInclusion(i, n, leaf, p, EMPTY_ROOT)],
    ["trailing root", () => verifyInclusion(i, n, leaf, [...p, root], root)],
    ["preceding root", () => verifyInclusion(i, n, leaf, [root, ...p], root)],
    ["removed component", () => verifyInclusion(i, n, leaf, p.slice(0, -1), root)],
    [
      "flipped bit",
      () => verifyInclusion(i, n, leaf, [Buffer.from(p[0]!.map((b, k) => (k === 0 ? b ^ 8 : b))), ...p.slice(1)], root),
    ],
    ["index ≥ size", () => verifyInclusion(8, 8, leaf, p, root)],
  ];
  for (const [name, f] of bad) assert.equal(f(), false, name);
  assert.throws(() => rootFromInclusionProof(0, 0, leaf, []), /outside/);
});

test("corrupted consistency proofs are rejected, with reasons", () => {
  const [m, n, proof] = CONSISTENCY[2]!;
  const r1 = h(ROOTS[m - 1]!);
  const r2 = h(ROOTS[n - 1]!);
  const p = proof.map(h);
  assert.ok(verifyConsistency(m, n, p, r1, r2));
  const bad: [string, () => boolean][] = [
    ["size1 - 1", () => verifyConsistency(m - 1, n, p, r1, r2)],
    ["size1 + 1", () => verifyConsistency(m + 1, n, p, r1, r2)],
    ["size2 * 2", () => verifyConsistency(m, n * 2, p, r1, r2)],
    ["swapped roots", () => verifyConsistency(m, n, p, r2, r1)],
    ["empty proof", () => verifyConsistency(m, n, [], r1, r2)],
    ["trailing garbage", () => verifyConsistency(m, n, [...p, r1], r1, r2)],
    ["preceding proof[0]", () => verifyConsistency(m, n, [p[0]!, ...p], r1, r2)],
    ["truncated", () => verifyConsistency(m, n, p.slice(0, -1), r1, r2)],
    [
      "flipped bit",
      () =>
        verifyConsistency(
          m,
          n,
          [...p.slice(0, 1), Buffer.from(p[1]!.map((b, k) => (k === 0 ? b ^ 16 : b))), ...p.slice(2)],
          r1,
          r2,
        ),
    ],
  ];
  for (const [name, f] of bad) assert.equal(f(), false, name);
  assert.match(consistencyError(5, 3, [], r1, r2)!, /rollback/);
  assert.match(consistencyError(4, 4, [], r1, r2)!, /fork/);
  assert.throws(() => consistencyProof(hashes, 5, 3), RangeError);
});
