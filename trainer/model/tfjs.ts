/**
 * The one import of the `@tensorflow/tfjs` bundle: it registers every op's gradient and chained op on the shared
 * tfjs-core engine (tfjs-core's own Node bundle leaves them out, and its ES module files do not load under Node's
 * ESM resolver), and the CPU and WebGL backends. Importing it also sets tfjs's PROD flag once, before any tensor
 * exists: PROD silences tfjs's console advice (the CPU backend's "install our node backend" banner on its first
 * write, deprecation notes) and skips debug-only checks. backend.ts then chooses the backend.
 */
import "@tensorflow/tfjs";
import * as tf from "@tensorflow/tfjs-core";

tf.env().set("PROD", true);
