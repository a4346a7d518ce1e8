import type { StringCheckGrader } from "../../../proto/graders.js";
import { render, type Template } from "../template.js";
import { fail, type GradeScope, type Outcome } from "./outcome.js";

/** 1 or 0: eq / ne (also spelled neq) case-sensitive; like = contains; ilike = contains, case-insensitive. */
export function stringCheck(op: StringCheckGrader["operation"], input: string, reference: string): number {
  switch (op) {
    case "eq":
      return input === reference ? 1 : 0;
    case "ne":
    case "neq":
      return input !== reference ? 1 : 0;
    case "like":
      return input.includes(reference) ? 1 : 0;
    case "ilike":
      return input.toLowerCase().includes(reference.toLowerCase()) ? 1 : 0;
  }
}

export function gradeStringCheck(
  g: { config: StringCheckGrader; input: Template; reference: Template },
  scope: GradeScope,
): Outcome {
  const a = render(g.input, scope);
  const b = render(g.reference, scope);
  if (a.missing.length || b.missing.length) return fail({ invalid_variable_error: true });
  return { reward: stringCheck(g.config.operation, a.text, b.text), errors: {} };
}
