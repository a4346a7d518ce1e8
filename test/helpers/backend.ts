/**
 * The tfjs backend of the backend-sensitive tests (model, sampling, SFT, RFT): `TEST_BACKEND` (wasm | tensorflow,
 * default wasm). scripts/test.mjs runs those files once per backend. A tensorflow pass whose backend does not load
 * fails with the way to install it: scripts/test.mjs skips that pass (saying so) only when
 * RFT_TEST_SKIP_TENSORFLOW=1.
 */
import { type BackendName, TENSORFLOW_SETUP, parseBackendName, useBackend } from "../../trainer/model/backend.js";

function testBackend(): BackendName {
  const b = parseBackendName(process.env["TEST_BACKEND"] ?? "wasm");
  if (b === "auto") throw new Error("TEST_BACKEND=auto: name a backend (wasm or tensorflow)");
  return b;
}

export const TEST_BACKEND: BackendName = testBackend();

/** Activates TEST_BACKEND; an error that says how to install it when it does not load. */
export async function useTestBackend(): Promise<string> {
  try {
    return await useBackend(TEST_BACKEND);
  } catch (e) {
    throw new Error(
      `TEST_BACKEND=${TEST_BACKEND}: ${(e as Error).message}` +
        (TEST_BACKEND === "tensorflow"
          ? ` — run \`${TENSORFLOW_SETUP}\` (or set RFT_TEST_SKIP_TENSORFLOW=1 to skip the tensorflow pass)`
          : ""),
      { cause: e },
    );
  }
}
