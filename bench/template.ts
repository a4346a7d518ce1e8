/**
 * Template parsing on hostile 1 MB templates (issue 13): many unclosed `{{`, many references, one reference
 * with a very long path, a long bad reference. Prints milliseconds per parse (+ render where it parses).
 * Run: npx tsx bench/template.ts [--mb N]
 */
import { parseTemplate, render } from "../grader-sidecar/src/template.js";

const mbArg = process.argv.indexOf("--mb");
const size = Math.round((mbArg >= 0 ? Number(process.argv[mbArg + 1]) : 1) * (1 << 20));

const cases: [string, string][] = [
  ['unclosed "{{" × N', "{{".repeat(size / 2)],
  ['"{{ {{" × N after a reference', `{{ item.n }} ${"{{ {{".repeat(size / 5)}`],
  ["references × N", "{{ item.n }}-".repeat(Math.floor(size / 13))],
  ["one reference, N/2 path steps", `{{ item${".x".repeat(size / 2)} }}`],
  ["one bad reference of N characters", `{{ item.${"a".repeat(size)}! }}`],
];

console.log(`template size ${(size / (1 << 20)).toFixed(2)} MiB; best of 3`);
for (const [name, text] of cases) {
  let best = Infinity;
  let what = "";
  for (let k = 0; k < 3; k++) {
    const t0 = performance.now();
    try {
      const t = parseTemplate(text);
      render(t, { item: { n: 3 }, sample: {} });
      what = `${t.parts.length} parts`;
    } catch (e) {
      what = `rejected: ${(e as Error).message.slice(0, 60)}`;
    }
    best = Math.min(best, performance.now() - t0);
  }
  console.log(`${name.padEnd(36)} ${best.toFixed(1).padStart(8)} ms   ${what}`);
}
