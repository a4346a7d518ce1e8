/**
 * Writes the digit-sorting example's datasets (seeded, so the committed files are reproducible):
 *   sft.jsonl / sft-valid.jsonl — chats "sort 3914" → "Answer: 1349" to warm-start a small model on the format;
 *   train.jsonl / valid.jsonl   — RFT prompts with the `answer` the python grader checks.
 * Run: npx tsx examples/sort-digits/make-data.ts
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = new URL(".", import.meta.url).pathname;
let s = 20261123;
const rand = (n: number) => {
  s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x6d2b79f5) >>> 0;
  return s % n;
};
const DIGITS = 4;
const seen = new Set<string>();
/** A fresh digit string (no problem appears twice across all four files). */
const problem = () => {
  for (;;) {
    const q = Array.from({ length: DIGITS }, () => rand(10)).join("");
    if (seen.has(q)) continue;
    seen.add(q);
    return { q, answer: [...q].sort().join("") };
  }
};
const lines = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
const sft = (n: number) =>
  Array.from({ length: n }, () => {
    const p = problem();
    return {
      messages: [
        { role: "user", content: `sort ${p.q}` },
        { role: "assistant", content: `Answer: ${p.answer}` },
      ],
    };
  });
const rft = (n: number) =>
  Array.from({ length: n }, () => {
    const p = problem();
    return { messages: [{ role: "user", content: `sort ${p.q}` }], answer: p.answer };
  });

writeFileSync(join(dir, "sft.jsonl"), lines(sft(400)));
writeFileSync(join(dir, "sft-valid.jsonl"), lines(sft(40)));
writeFileSync(join(dir, "train.jsonl"), lines(rft(1024)));
writeFileSync(join(dir, "valid.jsonl"), lines(rft(64)));
