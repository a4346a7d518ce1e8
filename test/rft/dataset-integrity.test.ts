// Dataset validation (issue 13): invalid UTF-8 was silently replaced by U+FFFD, and duplicate row ids trained
// and then failed `rft audit verify`. Both are now rejected at validation with file:line.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { generateKeyPairSync } from "node:crypto";
import { DatasetError, parseRftDataset, readRftDataset, readSftDataset } from "../../trainer/data/dataset.js";
import { tempJobDir } from "../helpers/rft-job.js";

const row = (o: object) => JSON.stringify(o);
const user = (content: string) => ({ role: "user", content });

function rejected(f: () => unknown): DatasetError {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof DatasetError, String(err));
    return err;
  }
  assert.fail("expected the dataset to be rejected");
}

test("invalid UTF-8 is rejected with the file, line and column of the bad byte", () => {
  const dir = tempJobDir("utf8");
  const file = join(dir, "train.jsonl");
  const good = Buffer.from(`${row({ messages: [user("é ok")], answer: "1" })}\n`);
  const bad = Buffer.concat([
    Buffer.from('{"messages":[{"role":"user","content":"ab'),
    Buffer.from([0xff]),
    Buffer.from('"}]}\n'),
  ]);
  const truncated = Buffer.concat([
    Buffer.from('{"messages":[{"role":"user","content":"'),
    Buffer.from([0xe2, 0x82]),
    Buffer.from('"}]}\n'),
  ]);
  const surrogate = Buffer.concat([
    Buffer.from('{"messages":[{"role":"user","content":"'),
    Buffer.from([0xed, 0xa0, 0x80]),
    Buffer.from('"}]}'),
  ]);
  writeFileSync(file, Buffer.concat([good, bad, good, truncated, surrogate]));
  const err = rejected(() => readRftDataset(file));
  assert.deepEqual(
    err.issues.map((i) => [i.line, i.message]),
    [
      [2, "not valid UTF-8 (byte 0xff at column 42)"],
      [4, "not valid UTF-8 (byte 0xe2 at column 40)"],
      [5, "not valid UTF-8 (byte 0xed at column 40)"],
    ],
  );
  assert.match(err.message, /train\.jsonl:2: not valid UTF-8/);
  // SFT files are read the same way.
  rejected(() => readSftDataset(file));
  // Valid multi-byte text (and a file without a final newline) reads as before.
  writeFileSync(file, Buffer.concat([good, Buffer.from(row({ messages: [user("日本語 😀")], answer: "2" }))]));
  assert.equal(readRftDataset(file).length, 2);
});

test("duplicate row ids are rejected with both lines", () => {
  const text = [
    row({ id: "a", messages: [user("1")] }),
    row({ id: "b", messages: [user("2")] }),
    row({ id: "a", messages: [user("3")] }),
    row({ messages: [user("4")] }), // implicit id #3
    row({ id: "#3", messages: [user("5")] }), // collides with the implicit id of the row above
  ].join("\n");
  const err = rejected(() => parseRftDataset(text, "train.jsonl"));
  assert.deepEqual(
    err.issues.map((i) => [i.line, i.field]),
    [
      [3, "id"],
      [5, "id"],
    ],
  );
  assert.match(err.message, /train\.jsonl:3: id: duplicate row id "a", first on line 1; row ids must be unique/);
  assert.match(err.message, /train\.jsonl:5: id: duplicate row id "#3", first on line 4 \(rows without an "id"/);
  // Unique ids (and no ids at all) are fine.
  assert.equal(
    parseRftDataset([row({ id: "a", messages: [user("1")] }), row({ messages: [user("2")] })].join("\n"), "t").length,
    2,
  );
});

test("rft dataset sign refuses invalid UTF-8 instead of signing U+FFFD", () => {
  const dir = tempJobDir("sign-utf8");
  const file = join(dir, "train.jsonl");
  writeFileSync(
    file,
    Buffer.concat([
      Buffer.from('{"messages":[{"role":"user","content":"a'),
      Buffer.from([0xc3]),
      Buffer.from('"}]}\n'),
    ]),
  );
  const key = join(dir, "auth.key");
  writeFileSync(key, generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }));
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "dataset", "sign", "--key", key, "--authority", "a", file],
    {
      encoding: "utf8",
    },
  );
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /train\.jsonl:1: not valid UTF-8 \(byte 0xc3 at column 41\)/);
  assert.equal(r.stdout, "");
});
