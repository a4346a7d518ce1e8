/**
 * The structured-log contract every component follows: pino JSON lines with `component`, level from
 * RFT_LOG_LEVEL (default info), and redaction of anything that can carry a secret.
 */
import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(component: string, level = process.env.RFT_LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { component },
    redact: {
      paths: [
        "apiKey",
        "*.apiKey",
        "authorization",
        "*.authorization",
        "headers.authorization",
        "privateKey",
        "*.privateKey",
      ],
      censor: "[redacted]",
    },
  });
}
