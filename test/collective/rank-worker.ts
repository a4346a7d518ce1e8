/**
 * A rank process for the fault tests: joins the collective from RFT_RANK / RFT_WORLD_SIZE / RFT_PEERS and
 * all-reduces a 4M-float tensor in a loop, printing "op N" after each; on failure prints the error to stderr
 * and exits 3. RFT_TEST_OP_TIMEOUT_MS sets the per-operation timeout.
 */
import { Collective } from "../../trainer/collective/collective.js";
import { rankEnv } from "../../trainer/collective/env.js";

const env = rankEnv(process.env)!;
const t0 = Date.now();
try {
  const c = await Collective.connect({
    ...env,
    rendezvousTimeoutMs: Number(process.env.RFT_TEST_RENDEZVOUS_MS ?? 20_000),
    opTimeoutMs: Number(process.env.RFT_TEST_OP_TIMEOUT_MS ?? 30_000),
  });
  process.stdout.write("joined\n");
  const x = new Float32Array(4 << 20);
  for (let i = 1; i <= Number(process.env.RFT_TEST_OPS ?? 1e9); i++) {
    x.fill(1);
    await c.allReduce(x);
    process.stdout.write(`op ${i}\n`);
  }
  await c.close();
} catch (e) {
  process.stderr.write(`FAILED after ${Date.now() - t0} ms: ${(e as Error).name}: ${(e as Error).message}\n`);
  process.exit(3);
}
