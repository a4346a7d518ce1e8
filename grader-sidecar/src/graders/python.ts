import type { PythonGrader } from "../../../proto/graders.js";
import type { PythonSandbox } from "../python/sandbox.js";
import { fail, type GradeScope, type Outcome } from "./outcome.js";

export async function gradePython(
  g: { config: PythonGrader },
  scope: GradeScope,
  sandbox: PythonSandbox,
): Promise<Outcome> {
  const r = await sandbox.grade(g.config.source, scope.sample, scope.item);
  if (r.ok) return { reward: r.value, errors: {} };
  if (r.kind === "runtime") {
    return fail({ python_grader_runtime_error: true, python_grader_runtime_error_details: r.details });
  }
  return fail({ python_grader_server_error: true, python_grader_server_error_type: r.type });
}
