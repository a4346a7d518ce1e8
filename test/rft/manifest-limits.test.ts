// Manifest reader limits (issue 13): a YAML anchor/alias bomb ended in a raw ReferenceError stack trace; now
// it is a ManifestError naming the file and the line where the aliases start, as is an oversized manifest.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { MANIFEST_MAX_BYTES, ManifestError, parseManifest } from "../../trainer/job/manifest.js";
import { tempJobDir } from "../helpers/rft-job.js";

const head = `apiVersion: rft.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: bomb
`;
// 9 levels of 10 aliases each: 10^9 strings if expanded.
const bomb =
  head +
  ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    .concat(Array.from({ length: 9 }, (_, i) => `a${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(", ")}]`))
    .join("\n") +
  "\nspec: {}\n";

function rejected(text: string) {
  try {
    parseManifest(text, "job.yaml");
  } catch (err) {
    assert.ok(err instanceof ManifestError, `not a ManifestError: ${String(err)}`);
    return err;
  }
  assert.fail("expected the manifest to be rejected");
}

test("manifest: an anchor/alias bomb is refused with the file and the line of the first alias", () => {
  const err = rejected(bomb);
  assert.equal(err.issues.length, 1);
  assert.equal(err.issues[0]!.line, 6);
  assert.match(err.message, /^job\.yaml:6: YAML: its aliases expand past the limit of 100/);
});

test("manifest: a few aliases are fine (only the expansion is bounded)", () => {
  const err = rejected(`${head}x: &v [1, 2]\ny: *v\nspec: {}\n`);
  // Parsed; rejected only by the schema for the made-up keys and the empty spec.
  assert.ok(err.issues.every((i) => !/alias/.test(i.message)));
});

test("manifest: a file larger than the limit is refused before parsing", () => {
  const err = rejected(`${head}# ${"x".repeat(MANIFEST_MAX_BYTES)}\n`);
  assert.match(
    err.message,
    new RegExp(`^job\\.yaml:1: the manifest is \\d+ bytes; the limit is ${MANIFEST_MAX_BYTES}$`),
  );
});

test("rft run: the alias bomb exits 2 with file:line, no stack trace", () => {
  const dir = tempJobDir("cli-bomb");
  const file = join(dir, "job.yaml");
  writeFileSync(file, bomb);
  const r = spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", "run", file], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /job\.yaml:6: YAML: its aliases expand past the limit/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});
