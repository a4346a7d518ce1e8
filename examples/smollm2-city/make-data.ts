/**
 * Writes the SmolLM2 city-extraction datasets (seeded, so the committed files are reproducible):
 *   train.jsonl — 256 prompts "Sentence: … Which city is mentioned? Answer with the city name only.";
 *   train-quick.jsonl — its first 128 rows (rft-quick.yaml: the README's first command, 32 steps);
 *   valid.jsonl — 24 held-out prompts whose cities, people and sentence patterns never appear in training.
 * Each row carries the `answer` the graders check.
 * Run: npx tsx examples/smollm2-city/make-data.ts
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = new URL(".", import.meta.url).pathname;
let s = 20261201;
const rand = (n: number) => {
  s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x6d2b79f5) >>> 0;
  return s % n;
};
const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;

const TRAIN_CITIES = [
  "Paris",
  "Tokyo",
  "Cairo",
  "Lima",
  "Oslo",
  "Madrid",
  "Toronto",
  "Berlin",
  "Sydney",
  "Rome",
  "Nairobi",
  "Seoul",
  "Dublin",
  "Lisbon",
  "Vienna",
  "Prague",
  "Mumbai",
  "Bangkok",
  "Chicago",
  "Boston",
  "Athens",
  "Warsaw",
  "Havana",
  "Manila",
  "Denver",
  "Zurich",
  "Helsinki",
  "Montreal",
  "Istanbul",
  "Jakarta",
] as const;
const VALID_CITIES = ["Amsterdam", "Lagos", "Santiago", "Hanoi", "Budapest", "Seattle", "Kyoto", "Marseille"] as const;
const TRAIN_PEOPLE = ["Alice", "Bob", "Maria", "Omar", "Chen", "Priya", "Lucas", "Fatima", "Noah", "Aiko"] as const;
const VALID_PEOPLE = ["Elena", "Kofi", "Ingrid", "Mateo"] as const;
const TRAIN_PATTERNS = [
  (p: string, c: string) => `${p} flew to ${c} last year.`,
  (p: string, c: string) => `${p} moved to ${c} for a new job.`,
  (p: string, c: string) => `Last summer ${p} visited friends in ${c}.`,
  (p: string, c: string) => `${p} has lived in ${c} since 2019.`,
  (p: string, c: string) => `The conference ${p} attended was held in ${c}.`,
  (p: string, c: string) => `${p} bought a small flat in ${c}.`,
] as const;
const VALID_PATTERNS = [
  (p: string, c: string) => `After the wedding, ${p} and her brother drove to ${c}.`,
  (p: string, c: string) => `${p} studied architecture in ${c} for two years.`,
] as const;

const row = (sentence: string, city: string) => ({
  messages: [
    {
      role: "user",
      content: `Sentence: "${sentence}"\nWhich city is mentioned? Answer with the city name only.`,
    },
  ],
  answer: city,
});
const lines = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

const train = Array.from({ length: 256 }, () => {
  const c = pick(TRAIN_CITIES);
  return row(pick(TRAIN_PATTERNS)(pick(TRAIN_PEOPLE), c), c);
});
const valid = Array.from({ length: 24 }, (_, i) => {
  const c = VALID_CITIES[i % VALID_CITIES.length]!;
  return row(pick(VALID_PATTERNS)(pick(VALID_PEOPLE), c), c);
});

writeFileSync(join(dir, "train.jsonl"), lines(train));
writeFileSync(join(dir, "train-quick.jsonl"), lines(train.slice(0, 128)));
writeFileSync(join(dir, "valid.jsonl"), lines(valid));
