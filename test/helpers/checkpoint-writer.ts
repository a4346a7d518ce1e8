/** Child process for the kill-mid-write test: saves checkpoint <step> slowly into <root>, signalling when half done. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CheckpointStore } from "../../trainer/checkpoint/store.js";

const [root, step, slow] = process.argv.slice(2);
const store = new CheckpointStore(root!);
await store.save({
  info: {
    step: Number(step),
    validRewardMean: Number(step) / 100,
    trainRewardMean: null,
    createdAt: 0,
    reason: "eval",
  },
  async write(dir) {
    writeFileSync(join(dir, "weights.bin"), Buffer.alloc(1 << 20, Number(step)));
    if (slow === "slow") {
      process.stdout.write("half\n");
      await new Promise((r) => setTimeout(r, 60_000));
    }
    writeFileSync(join(dir, "state.json"), JSON.stringify({ step: Number(step) }));
  },
});
process.stdout.write("done\n");
