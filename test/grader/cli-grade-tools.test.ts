/** `rft grade --tool-calls`: a sample's tool calls reach the grader as `sample.output_tools` (OpenAI's shape). */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

/** A tool-call grader in the style of OpenAI's function-calling examples: the right function, the right city. */
const GRADER = JSON.stringify({
  type: "multi",
  name: "tool",
  graders: {
    name: {
      type: "string_check",
      name: "name",
      input: "{{ sample.output_tools[0].function.name }}",
      reference: "get_weather",
      operation: "eq",
    },
    args: {
      type: "string_check",
      name: "args",
      input: "{{ sample.output_tools[0].function.arguments }}",
      reference: "{{ item.city }}",
      operation: "like",
    },
  },
  calculate_output: "0.5 * name + 0.5 * args",
});
const CALLS = [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }];

test("rft grade --tool-calls: an array or an assistant message; bad shapes exit 2 naming the field", () => {
  const ok = rft(
    "grade",
    "--grader",
    GRADER,
    "--sample",
    "",
    "--item",
    '{"city":"Oslo"}',
    "--tool-calls",
    JSON.stringify(CALLS),
  );
  assert.equal(ok.status, 0, ok.stderr);
  const res = JSON.parse(ok.stdout) as { reward: number; metadata: { errors: { invalid_variable_error: boolean } } };
  assert.equal(res.reward, 1);
  const msg = rft(
    "grade",
    "--grader",
    GRADER,
    "--sample",
    "",
    "--item",
    '{"city":"Bergen"}',
    "--tool-calls",
    JSON.stringify({ role: "assistant", content: null, tool_calls: CALLS }),
  );
  assert.equal(msg.status, 0, msg.stderr);
  assert.equal((JSON.parse(msg.stdout) as { reward: number }).reward, 0.5);
  // Without tool calls the template refers to nothing: OpenAI's invalid_variable_error, reward 0.
  const none = rft("grade", "--grader", GRADER, "--sample", "", "--item", '{"city":"Oslo"}');
  assert.equal(none.status, 0, none.stderr);
  assert.equal((JSON.parse(none.stdout) as { reward: number }).reward, 0);
  const bad = rft(
    "grade",
    "--grader",
    GRADER,
    "--sample",
    "",
    "--tool-calls",
    '[{"type":"function","function":{"name":"f","arguments":{}}}]',
  );
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--tool-calls\[0\]\.function\.arguments: must be a string \(JSON text\)/);
});
