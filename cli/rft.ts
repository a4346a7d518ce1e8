#!/usr/bin/env node
/** The `rft` command: thin wiring only. Each subcommand lives in cli/commands/<name>.ts and exports `register`. */
import { Command } from "commander";
import * as audit from "./commands/audit.js";
import * as dataset from "./commands/dataset.js";
import * as grade from "./commands/grade.js";
import * as grader from "./commands/grader.js";
import * as initModel from "./commands/init-model.js";
import * as keys from "./commands/keys.js";
import * as ledger from "./commands/ledger.js";
import * as operator from "./commands/operator.js";
import * as run from "./commands/run.js";
import * as serve from "./commands/serve.js";
import * as trainer from "./commands/trainer.js";

const program = new Command()
  .name("rft")
  .description("rft-operator: reinforcement fine-tuning on your own hardware, with training governance")
  .version("0.1.0")
  .showHelpAfterError();

// One line per command module (keep sorted).
const modules: { register(program: Command): void }[] = [
  audit,
  dataset,
  grade,
  grader,
  initModel,
  keys,
  ledger,
  operator,
  run,
  serve,
  trainer,
];
for (const m of modules) m.register(program);

await program.parseAsync(process.argv);
