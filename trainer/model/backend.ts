/**
 * tfjs backend selection: `wasm` (default on CPU), `cpu`, `tensorflow` (tfjs-node / tfjs-node-gpu, optional),
 * `webgpu` (optional). The model code imports only `@tensorflow/tfjs-core`; this module registers the backend.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { watchBackendFailures } from "./backend-failure.js";

export const BACKENDS = ["wasm", "cpu", "tensorflow", "webgpu"] as const;
export type BackendName = (typeof BACKENDS)[number];

export class BackendError extends Error {
  override name = "BackendError";
}

const require = createRequire(import.meta.url);

export function parseBackendName(s: string | undefined): BackendName {
  const name = (s ?? "wasm").toLowerCase();
  if ((BACKENDS as readonly string[]).includes(name)) return name as BackendName;
  throw new BackendError(`unknown backend "${s}" (choose one of ${BACKENDS.join(", ")})`);
}

async function importOptional(pkg: string, hint: string): Promise<unknown> {
  try {
    return await import(pkg);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") {
      throw new BackendError(`backend needs the optional package "${pkg}", which is not installed: ${hint}`);
    }
    throw new BackendError(`loading "${pkg}" failed: ${(e as Error).message}`);
  }
}

/** Registers and activates a backend; resolves to the name tfjs reports. Idempotent. */
export async function useBackend(name: BackendName = "wasm"): Promise<string> {
  // PROD silences tfjs's console advice ("install tfjs-node") and skips debug-only checks.
  tf.env().set("PROD", true);
  if (tf.getBackend() === backendKey(name)) return tf.getBackend();
  switch (name) {
    case "cpu":
      await import("@tensorflow/tfjs-backend-cpu");
      break;
    case "wasm": {
      const wasm = await import("@tensorflow/tfjs-backend-wasm");
      // npm may not run install scripts, but the .wasm binaries ship inside the package's dist/.
      const dist = join(dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json")), "dist") + "/";
      wasm.setWasmPaths(dist);
      break;
    }
    case "tensorflow": {
      try {
        await importOptional("@tensorflow/tfjs-node-gpu", "");
      } catch {
        await importOptional(
          "@tensorflow/tfjs-node",
          "install @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA); both download libtensorflow at install time",
        );
      }
      break;
    }
    case "webgpu": {
      const gpu = (await importOptional("webgpu", "install the `webgpu` package (Dawn) and a Vulkan loader")) as {
        create(opts: string[]): unknown;
        globals: Record<string, unknown>;
      };
      Object.assign(globalThis, gpu.globals);
      const nav = ((globalThis as { navigator?: Record<string, unknown> }).navigator ?? {}) as Record<string, unknown>;
      if (!nav["gpu"]) {
        Object.defineProperty(globalThis, "navigator", { value: { ...nav, gpu: gpu.create([]) }, configurable: true });
      }
      await importOptional("@tensorflow/tfjs-backend-webgpu", "install @tensorflow/tfjs-backend-webgpu");
      break;
    }
  }
  const ok = await tf.setBackend(backendKey(name));
  if (!ok) throw new BackendError(`backend "${name}" failed to initialise`);
  await tf.ready();
  watchBackendFailures();
  return tf.getBackend();
}

function backendKey(name: BackendName): string {
  return name === "tensorflow" ? "tensorflow" : name;
}
