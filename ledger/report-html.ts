/**
 * The auditor's report: who contributed what, where in the model (parameter groups), in which steps, what was
 * rejected and why, the reward curve, checkpoints, and the verdict of every check. One self-contained HTML page
 * (inline CSS and SVG; no script, no external asset, so it opens offline and can be archived as is) or Markdown.
 * Pure: a summary (audit-summary.ts) and the verifier's report in, text out.
 */
import type { AuditSummary, AuthoritySummary } from "./audit-summary.js";
import type { CheckName, VerifyReport } from "./verify.js";

/** The checks the verifier runs, in its order, with what each means for a reader. */
const CHECKS: [CheckName, string][] = [
  ["keys", "the job and ledger keys (pinned ones, when given)"],
  ["signature", "every event is signed by the job key"],
  ["chain", "every event links to the previous one's hash"],
  ["merkle", "the Merkle root covers exactly these events"],
  ["tree-head", "the ledger's signed tree head"],
  ["job", "the job's declaration (authorities, envelopes, base model)"],
  ["admission", "every admitted row has a valid credential of its authority"],
  ["envelope", "no row's gradient reached a group outside its envelope"],
  ["weights", "a group's digest changed only in steps with admitted contributions"],
  ["steps", "steps in order, committed by every rank"],
  ["checkpoint", "checkpoints equal the weights of their step"],
  ["resume", "restarts return to an earlier checkpoint of this chain"],
  ["final-model", "the delivered weights equal the ledger's final digests"],
  ["manifest", "the bundle's manifest equals the row events"],
  ["dataset", "the dataset matches the manifest"],
  ["model-signature", "the OpenSSF model signature, bound to the final digests"],
  ["provenance", "the signed provenance statement's materials"],
];

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

export function ranges(xs: number[]): string {
  if (!xs.length) return "none";
  const out: string[] = [];
  let a = xs[0]!;
  let b = a;
  for (const x of xs.slice(1)) {
    if (x === b + 1) b = x;
    else {
      out.push(a === b ? `${a}` : `${a}-${b}`);
      a = b = x;
    }
  }
  out.push(a === b ? `${a}` : `${a}-${b}`);
  return out.join(", ");
}

/** Which of the optional checks ran (each needs an input: the model, the dataset, the signatures). */
export interface OptionalChecks {
  model: boolean;
  dataset: boolean;
  modelSignature: boolean;
  provenance: boolean;
}

export interface ReportContext {
  generatedAt: string;
  ran: OptionalChecks;
}

function checkRows(
  r: VerifyReport,
  ran: OptionalChecks,
): { check: string; what: string; status: "passed" | "failed" | "not run"; detail: string }[] {
  const optional: Partial<Record<CheckName, boolean>> = {
    "final-model": ran.model,
    dataset: ran.dataset,
    "model-signature": ran.modelSignature,
    provenance: ran.provenance,
  };
  return CHECKS.map(([check, what]) => {
    const fs = r.failures.filter((f) => f.check === check);
    return {
      check,
      what,
      status: fs.length ? "failed" : optional[check] === false ? "not run" : "passed",
      detail: fs
        .slice(0, 3)
        .map((f) => `${f.seq === null ? "bundle" : `event seq ${f.seq}`} ${f.field}: ${f.reason}`)
        .join("; "),
    };
  });
}

/** Step bins for the heat map: at most `max` columns, each a run of consecutive update events. */
function bins(n: number, max = 60): { from: number; to: number }[] {
  const width = Math.max(1, Math.ceil(n / max));
  const out: { from: number; to: number }[] = [];
  for (let i = 0; i < n; i += width) out.push({ from: i, to: Math.min(n, i + width) });
  return out;
}

function heatMap(s: AuditSummary, a: AuthoritySummary): string {
  const cols = bins(s.steps.length);
  const inside = new Set(a.groups);
  const cell = (gi: number, b: { from: number; to: number }) => {
    let hit = 0;
    for (let k = b.from; k < b.to; k++) if (s.steps[k]!.touched[a.name]?.includes(gi)) hit++;
    const f = hit / (b.to - b.from);
    const bg =
      f === 0 ? (inside.has(s.groups[gi]!) ? "#f4f7fb" : "#e6e6e6") : `rgba(31,94,180,${(0.25 + 0.75 * f).toFixed(2)})`;
    const first = s.steps[b.from]!.step;
    const last = s.steps[b.to - 1]!.step;
    return `<td style="background:${bg}" title="${esc(s.groups[gi])}, steps ${first}${last !== first ? `-${last}` : ""}: ${hit} of ${b.to - b.from}"></td>`;
  };
  const head = cols
    .map((b) => `<th title="update events ${b.from}-${b.to - 1}">${s.steps[b.from]!.step}</th>`)
    .join("");
  const rows = s.groups
    .map(
      (g, gi) =>
        `<tr><th class="g${inside.has(g) ? "" : " out"}">${esc(g)}</th>${cols.map((b) => cell(gi, b)).join("")}</tr>`,
    )
    .join("\n");
  return `<table class="heat" aria-label="heat map of ${esc(a.name)}"><thead><tr><th>group \\ step</th>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}

function rewardCurve(s: AuditSummary): string {
  const pts = s.steps.map((x) => x.reward.mean);
  if (!pts.length) return "<p>No update events.</p>";
  const W = 640;
  const H = 180;
  const lo = Math.min(...pts.slice(0, 100_000), 0);
  const hi = Math.max(...pts.slice(0, 100_000), lo + 1e-9);
  const stride = Math.max(1, Math.ceil(pts.length / 800));
  const xy: string[] = [];
  for (let i = 0; i < pts.length; i += stride)
    xy.push(
      `${((i / Math.max(1, pts.length - 1)) * W).toFixed(1)},${(H - ((pts[i]! - lo) / (hi - lo)) * H).toFixed(1)}`,
    );
  return `<svg role="img" aria-label="reward curve" width="${W + 60}" height="${H + 30}" viewBox="-50 -5 ${W + 60} ${H + 30}">
<rect x="0" y="0" width="${W}" height="${H}" fill="#fafafa" stroke="#ccc"/>
<polyline fill="none" stroke="#1f5eb4" stroke-width="2" points="${xy.join(" ")}"/>
<text x="-6" y="10" text-anchor="end" font-size="11">${hi.toFixed(3)}</text>
<text x="-6" y="${H}" text-anchor="end" font-size="11">${lo.toFixed(3)}</text>
<text x="0" y="${H + 16}" font-size="11">step ${s.steps[0]!.step}</text>
<text x="${W}" y="${H + 16}" text-anchor="end" font-size="11">step ${s.steps[s.steps.length - 1]!.step}</text>
</svg>`;
}

function soleLine(a: AuthoritySummary): string {
  if (a.soleSteps.length && a.soleSteps[0]!.outside === 0)
    return `only contributor in steps ${ranges(a.soleSteps.map((x) => x.step))}; its envelope covers every group`;
  if (!a.soleSteps.length) return "no step with this authority as the only contributor";
  const changed = a.soleSteps.filter((x) => x.changedOutside.length);
  const steps = ranges(a.soleSteps.map((x) => x.step));
  return changed.length
    ? `only contributor in steps ${steps}; groups OUTSIDE its envelope CHANGED in steps ${ranges(changed.map((x) => x.step))}`
    : `only contributor in steps ${steps}; all ${a.soleSteps[0]!.outside} groups outside its envelope byte-identical in each`;
}

export function reportHtml(s: AuditSummary, r: VerifyReport, { generatedAt, ran }: ReportContext): string {
  const checks = checkRows(r, ran);
  const verdict = r.ok ? "VERIFIED: every check passed" : `FAILED: ${r.failures.length} check(s) failed`;
  const auth = s.authorities
    .map(
      (a) => `<section class="authority"><h3>${esc(a.name)}</h3>
<table class="kv">
<tr><th>lawful basis</th><td>${esc(a.lawfulBasis)}</td></tr>
<tr><th>key id</th><td><code>${esc(a.keyId)}</code></td></tr>
<tr><th>envelope</th><td>${esc(a.envelope.join(", "))} (${a.groups.length} groups)</td></tr>
<tr><th>rows</th><td>admitted ${a.admitted}, rejected ${a.rejected}</td></tr>
<tr><th>groups reached</th><td>${a.groupsTouched.length} of ${s.groups.length}</td></tr>
<tr><th>steps</th><td>${esc(ranges(a.steps))}</td></tr>
<tr><th>envelope check</th><td class="sole">${esc(soleLine(a))}</td></tr>
</table>
<h4>Where in the model, when (darker: more of the steps in that column)</h4>
${s.steps.length ? heatMap(s, a) : "<p>No update events.</p>"}
</section>`,
    )
    .join("\n");
  const rejected = s.rejections.length
    ? `<table class="list"><thead><tr><th>row</th><th>claimed authority</th><th>code</th><th>reason</th><th>event seq</th></tr></thead><tbody>
${s.rejections
  .slice(0, 5000)
  .map(
    (x) =>
      `<tr><td>${esc(x.row)}</td><td>${esc(x.authority ?? "-")}</td><td>${esc(x.code)}</td><td>${esc(x.reason)}</td><td>${x.seq}</td></tr>`,
  )
  .join(
    "\n",
  )}</tbody></table>${s.rejections.length > 5000 ? `<p>… and ${s.rejections.length - 5000} more (see the bundle).</p>` : ""}`
    : "<p>No row was rejected.</p>";
  const ckpts = s.checkpoints.length
    ? `<table class="list"><thead><tr><th>name</th><th>step</th><th>event seq</th><th>metrics</th></tr></thead><tbody>${s.checkpoints
        .map(
          (c) =>
            `<tr><td>${esc(c.name)}</td><td>${c.step}</td><td>${c.seq}</td><td>${esc(
              Object.entries(c.metrics)
                .map(([k, v]) => `${k} ${Number(v).toFixed(4)}`)
                .join(", "),
            )}</td></tr>`,
        )
        .join("")}</tbody></table>`
    : "<p>No checkpoint.</p>";
  const resumes = s.resumes.length
    ? `<ul>${s.resumes.map((x) => `<li>event seq ${x.seq}: back to ${esc(x.checkpoint ?? "the base model")}, abandoned steps ${esc(ranges(x.abandonedSteps))}</li>`).join("")}</ul>`
    : "<p>None.</p>";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Training audit: ${esc(s.job)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1b1b;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{display:inline-block;padding:6px 12px;border-radius:4px;font-weight:600;color:#fff}
.ok{background:#1e7d32}.bad{background:#b3261e}
table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:top}
.list td,.list th,.kv td,.kv th{border-bottom:1px solid #eee}.kv th{color:#555;font-weight:500}
.passed{color:#1e7d32;font-weight:600}.failed{color:#b3261e;font-weight:600}.notrun{color:#777}
.heat td{width:10px;height:12px;padding:0;border:1px solid #fff}.heat th{font-size:10px;font-weight:400;padding:0 2px}
.heat th.g{text-align:right;font-family:ui-monospace,monospace}.heat th.out{color:#999}
code{font-family:ui-monospace,monospace;font-size:12px}.sole{font-weight:600}
</style></head><body>
<h1>Training audit: ${esc(s.job)}</h1>
<p>Generated ${esc(generatedAt)} from the provenance bundle (${s.events} events, ${s.steps.length} update events, ledger Merkle root <code>${esc(s.ledgerMerkleRoot)}</code>).</p>
<p><span class="verdict ${r.ok ? "ok" : "bad"}" id="verdict">${esc(verdict)}</span></p>
<h2>Checks</h2>
<table class="list" id="checks"><thead><tr><th>check</th><th>what it establishes</th><th>status</th><th>detail</th></tr></thead><tbody>
${checks.map((c) => `<tr><td>${c.check}</td><td>${esc(c.what)}</td><td class="${c.status.replace(" ", "")}">${c.status}</td><td>${esc(c.detail)}</td></tr>`).join("\n")}
</tbody></table>
${r.notes.length ? `<ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>` : ""}
<h2>Data: ${s.dataset.rows} rows, ${s.rejections.length} rejected</h2>
<p>Dataset manifest Merkle root <code>${esc(s.dataset.manifestRoot ?? "-")}</code>${s.unattributed ? `; ${s.unattributed} rows admitted without provenance (default envelope)` : ""}.</p>
<h2>Contributors</h2>
${auth || "<p>No authority declared.</p>"}
<h2>Rejected rows</h2>
${rejected}
<h2>Reward (mean per update)</h2>
${rewardCurve(s)}
<h2>Checkpoints</h2>
${ckpts}
<h2>Restarts</h2>
${resumes}
</body></html>
`;
}

export function reportMarkdown(s: AuditSummary, r: VerifyReport, { generatedAt, ran }: ReportContext): string {
  const L: string[] = [];
  L.push(`# Training audit: ${s.job}`, "");
  L.push(
    `Generated ${generatedAt}; ${s.events} events, ${s.steps.length} update events; ledger Merkle root \`${s.ledgerMerkleRoot}\`.`,
    "",
  );
  L.push(`**${r.ok ? "VERIFIED: every check passed" : `FAILED: ${r.failures.length} check(s) failed`}**`, "");
  L.push("| check | what it establishes | status | detail |", "| --- | --- | --- | --- |");
  for (const c of checkRows(r, ran))
    L.push(`| ${c.check} | ${c.what} | ${c.status} | ${c.detail.replace(/\|/g, "\\|")} |`);
  for (const n of r.notes) L.push(`- note: ${n}`);
  L.push("", "## Contributors", "");
  L.push("| authority | lawful basis | envelope | admitted | rejected | groups reached | steps | envelope check |");
  L.push("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const a of s.authorities)
    L.push(
      `| ${a.name} | ${a.lawfulBasis.replace(/\|/g, "\\|")} | ${a.envelope.join(", ")} | ${a.admitted} | ${a.rejected} | ${a.groupsTouched.length} of ${s.groups.length} | ${ranges(a.steps)} | ${soleLine(a)} |`,
    );
  L.push("", `## Rejected rows (${s.rejections.length})`, "");
  if (s.rejections.length) {
    L.push("| row | claimed authority | code | reason | seq |", "| --- | --- | --- | --- | --- |");
    for (const x of s.rejections.slice(0, 5000))
      L.push(`| ${x.row} | ${x.authority ?? "-"} | ${x.code} | ${x.reason.replace(/\|/g, "\\|")} | ${x.seq} |`);
  } else L.push("None.");
  L.push("", "## Checkpoints", "");
  for (const c of s.checkpoints) L.push(`- ${c.name} (step ${c.step}, seq ${c.seq})`);
  if (!s.checkpoints.length) L.push("None.");
  L.push("");
  return L.join("\n");
}
