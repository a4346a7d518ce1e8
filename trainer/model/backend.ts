/**
 * tfjs backend selection. The default ("auto") is `tensorflow` (tfjs-node-gpu or tfjs-node, libtensorflow:
 * multi-threaded, ~3× wasm's training speed on CPU) when it loads, else `wasm` with a one-line notice on stderr
 * saying why and how to install the fast one (scripts/setup.d/15-tfjs-node.sh). An explicit name forces that
 * backend: `wasm` (SIMD, single-threaded), `cpu` (pure JS, tiny shapes only), `tensorflow`, `webgpu` (Dawn over
 * Vulkan). The model code imports only `@tensorflow/tfjs-core`; this module registers the backend.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { watchBackendFailures } from "./backend-failure.js";

export const BACKENDS = ["wasm", "cpu", "tensorflow", "webgpu"] as const;
export type BackendName = (typeof BACKENDS)[number];
/** A backend name, or "auto": tensorflow when it loads, else wasm (with a notice). */
export type BackendChoice = BackendName | "auto";

export class BackendError extends Error {
  override name = "BackendError";
}

const require = createRequire(import.meta.url);

/** What the setup script is called, for hints. */
export const TENSORFLOW_SETUP = "bash scripts/setup.d/15-tfjs-node.sh";

/** `undefined` and "auto" → "auto" (the default); otherwise one of BACKENDS. */
export function parseBackendName(s: string | undefined): BackendChoice {
  const name = (s ?? "auto").toLowerCase();
  if (name === "auto") return "auto";
  if ((BACKENDS as readonly string[]).includes(name)) return name as BackendName;
  throw new BackendError(`unknown backend "${s}" (choose one of auto, ${BACKENDS.join(", ")})`);
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

let autoNoticeShown = false;

/**
 * Registers and activates a backend; resolves to the name tfjs reports. Idempotent. "auto" (the default) tries
 * `tensorflow` and falls back to `wasm`, writing one line to stderr that says why (once per process).
 */
export async function useBackend(choice: BackendChoice = "auto"): Promise<string> {
  // PROD silences tfjs's console advice ("install tfjs-node") and skips debug-only checks.
  tf.env().set("PROD", true);
  if (choice === "auto") {
    if (tf.getBackend() === "tensorflow" || tf.getBackend() === "wasm") return tf.getBackend();
    try {
      return await activate("tensorflow");
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
      if (!autoNoticeShown) {
        autoNoticeShown = true;
        process.stderr.write(
          `rft: using the slower wasm backend: the tensorflow backend is unavailable (${e.message}). ` +
            `For the fast CPU backend run \`${TENSORFLOW_SETUP}\` (after every npm ci); --backend wasm chooses wasm quietly.\n`,
        );
      }
      return await activate("wasm");
    }
  }
  return await activate(choice);
}

async function activate(name: BackendName): Promise<string> {
  if (tf.getBackend() === name) return name;
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
    case "tensorflow":
      await loadTensorflow();
      break;
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
  const ok = await tf.setBackend(name);
  if (!ok) throw new BackendError(`backend "${name}" failed to initialise`);
  await tf.ready();
  watchBackendFailures();
  return tf.getBackend();
}

let tensorflowLoaded = false;

/** tfjs-node-gpu (CUDA) first, then tfjs-node; both register the `tensorflow` backend when imported. */
async function loadTensorflow(): Promise<void> {
  if (tensorflowLoaded) return;
  // Read by libtensorflow when the addon loads: 2 = warnings and errors only. oneDNN's custom ops are off by
  // default: with them on, TF prints an absl INFO line at load that no log level silences, and they measured no
  // faster here (and may change results in the last bits); TF_ENABLE_ONEDNN_OPTS=1 turns them back on.
  process.env["TF_CPP_MIN_LOG_LEVEL"] ??= "2";
  process.env["TF_ENABLE_ONEDNN_OPTS"] ??= "0";
  try {
    await importOptional("@tensorflow/tfjs-node-gpu", "");
  } catch (gpuErr) {
    const gpuMissing = (gpuErr as Error).message.includes("which is not installed");
    try {
      await importOptional("@tensorflow/tfjs-node", `run \`${TENSORFLOW_SETUP}\` (GPU=1 for CUDA)`);
    } catch (e) {
      // A tfjs-node-gpu that is installed but broken is the more useful error to show.
      throw gpuMissing ? e : gpuErr;
    }
  }
  guardIntegerRound();
  tensorflowLoaded = true;
}

/**
 * TF 2.18+ returns zeros for `Round` on int32 tensors (float round is fine). Rounding an integer is the identity,
 * so the tensorflow backend's Round kernel hands integer inputs to its Identity kernel and the rest to TF.
 */
function guardIntegerRound(): void {
  const round = tf.getKernel(tf.Round, "tensorflow");
  const identity = tf.getKernel(tf.Identity, "tensorflow");
  if (!round || !identity || (round as { guarded?: boolean }).guarded) return;
  tf.unregisterKernel(tf.Round, "tensorflow");
  const guarded: tf.KernelConfig & { guarded: boolean } = {
    ...round,
    guarded: true,
    kernelFunc: (args) => ((args.inputs["x"] as tf.TensorInfo).dtype === "int32" ? identity : round).kernelFunc(args),
  };
  tf.registerKernel(guarded);
}
