/**
 * The grader sidecar's public entry for the trainer: what a job needs of the graders without reaching into
 * the sidecar's files — the grader check of a manifest (`compileGrader`, `GraderValidationError`), the
 * in-process engine `rft run` grades with (`GraderEngine`, the `sample` shape `SampleInput`), and the judge
 * endpoints of model graders (`judgeEndpoints`, `endpointFromEnv`). The trainer imports only this file of
 * grader-sidecar/ (test/architecture.test.ts checks it); pods reach the sidecar over gRPC instead.
 */
export { GraderEngine, type GraderEngineOptions, type SampleInput } from "./engine.js";
export { endpointFromEnv, judgeEndpoints } from "./model-client.js";
export { compileGrader, GraderValidationError } from "./validate.js";
