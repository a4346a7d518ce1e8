#!/usr/bin/env node
/** The `rft` command: thin wiring of the components (see each subcommand's module under cli/commands). */
import { Command } from "commander";

const program = new Command()
  .name("rft")
  .description("rft-operator: reinforcement fine-tuning on your own hardware, with training governance")
  .version("0.1.0");

await program.parseAsync(process.argv);
