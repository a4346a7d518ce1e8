import assert from "node:assert/strict";
import { test } from "node:test";
import { DatasetError, parseRftDataset, parseSftDataset } from "../../trainer/data/dataset.js";

const row = (o: object) => JSON.stringify(o);
const user = (content: string) => ({ role: "user", content });

test("RFT rows: messages, tools and the item (every other key)", () => {
  const text = [
    row({
      messages: [{ role: "developer", content: "Answer briefly." }, user("2+2?")],
      answer: "4",
      meta: { level: 1 },
    }),
    "",
    row({
      messages: [user("weather?")],
      tools: [{ type: "function", function: { name: "get_weather" } }],
      city: "Oslo",
    }),
  ].join("\n");
  const rows = parseRftDataset(text, "train.jsonl");
  assert.equal(rows.length, 2);
  assert.equal(rows[0]!.line, 1);
  assert.equal(rows[1]!.line, 3); // blank lines are skipped, numbering is the file's
  assert.equal(rows[0]!.item.answer, "4");
  assert.deepEqual(rows[0]!.item.meta, { level: 1 });
  assert.ok(Array.isArray(rows[0]!.item.messages), "item is the entire example");
  assert.equal(rows[1]!.tools!.length, 1);
});

test("RFT rows: every bad line is reported with its line number and field", () => {
  const text = [
    row({ messages: [user("ok")] }),
    "{not json",
    row({ messages: [user("q"), { role: "assistant", content: "a" }] }),
    row({ messages: [{ role: "system", content: "s" }, user("q")] }),
    row({ answer: 1 }),
    "[1,2]",
    row({ messages: [{ role: "tool", content: "x" }, user("q")] }),
    row({ messages: [user("q")], tools: [{ type: "function", function: { name: "bad name!" } }] }),
    row({ messages: [user("q")], provenance: { authority: "a" } }),
    row({ messages: [{ role: "user", content: [{ type: "audio", data: "" }] }] }),
  ].join("\n");
  assert.throws(
    () => parseRftDataset(text, "train.jsonl"),
    (err: unknown) => {
      assert.ok(err instanceof DatasetError);
      const at = (line: number) => err.issues.filter((i) => i.line === line);
      assert.equal(at(1).length, 0);
      assert.match(at(2)[0]!.message, /not valid JSON/);
      assert.equal(at(3)[0]!.field, "messages[1].role");
      assert.match(at(3)[0]!.message, /last message must be a user turn/);
      assert.match(at(4)[0]!.message, /use "developer"/);
      assert.deepEqual([at(5)[0]!.field, at(5)[0]!.message], ["messages", "is required"]);
      assert.match(at(6)[0]!.message, /must be a JSON object/);
      assert.equal(at(7)[0]!.field, "messages[0].tool_call_id");
      assert.equal(at(8)[0]!.field, "tools[0].function.name");
      assert.equal(at(9)[0]!.field, "provenance");
      assert.equal(at(10)[0]!.field, "messages[0].content[0].type");
      assert.match(err.message, /train\.jsonl:2: not valid JSON/);
      return true;
    },
  );
});

test("RFT: empty files and the row limit", () => {
  assert.throws(() => parseRftDataset("\n\n", "v.jsonl"), /no rows/);
  const two = [row({ messages: [user("a")] }), row({ messages: [user("b")] })].join("\n");
  assert.throws(() => parseRftDataset(two, "v.jsonl", { maxRows: 1 }), /2 rows; at most 1/);
});

test("SFT rows need an assistant turn to learn from; weights are 0/1 on assistant turns", () => {
  const ok = row({ messages: [{ role: "system", content: "s" }, user("q"), { role: "assistant", content: "a" }] });
  assert.equal(parseSftDataset(ok, "sft.jsonl").length, 1);
  const text = [
    row({ messages: [user("q")] }),
    row({ messages: [user("q"), { role: "assistant", content: "a", weight: 0 }] }),
    row({
      messages: [
        { role: "user", content: "q", weight: 1 },
        { role: "assistant", content: "a" },
      ],
    }),
  ].join("\n");
  assert.throws(
    () => parseSftDataset(text, "sft.jsonl"),
    (err: unknown) =>
      err instanceof DatasetError &&
      err.issues[0]!.line === 1 &&
      /at least one assistant/.test(err.issues[0]!.message) &&
      err.issues[1]!.line === 2 &&
      err.issues[2]!.field === "messages[0].weight",
  );
});
