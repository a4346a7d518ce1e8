/**
 * A rank's place in the gang, from the environment the operator (or `rft run --replicas`) sets:
 *   RFT_RANK        this rank, 0 … N−1
 *   RFT_WORLD_SIZE  N
 *   RFT_PEERS       "host:port,host:port,…" by rank (N entries); a rank listens on its own entry's port
 *   RFT_DATA_PORT   optional: the port of this rank's data link (default: any free port; peers learn it at
 *                   rendezvous). The operator sets 29501, which the chart's NetworkPolicy allows.
 *   RFT_JOB         optional: the job reference (ranks of different jobs never pair up)
 *   RFT_COLLECTIVE_TIMEOUT  optional: seconds one collective operation may wait for a peer (default 300)
 *   RFT_RENDEZVOUS_TIMEOUT  optional: seconds to wait for every rank to join (default 120)
 *   RFT_COLLECTIVE_SECRET   required with N > 1: the job's shared secret (≥ 16 bytes) that every Hello and data
 *                   link proves knowledge of (auth.ts). `rft run --replicas` generates it; in a cluster it is the
 *                   `collective-secret` key of the job's Secret. It is removed from `env` once read, so the
 *                   processes a rank starts (graders) do not inherit it.
 * Returns null when RFT_WORLD_SIZE is unset or 1 (a single rank needs no collective).
 */
import { MIN_SECRET_BYTES } from "./auth.js";
import { CollectiveError } from "./collective.js";

export interface RankEnv {
  rank: number;
  worldSize: number;
  peers: string[];
  job?: string;
  /** The job's collective secret (RFT_COLLECTIVE_SECRET). */
  secret: string;
  dataPort?: number;
  opTimeoutMs?: number;
  rendezvousTimeoutMs?: number;
}

function int(env: NodeJS.ProcessEnv, name: string, min: number): number {
  const v = env[name];
  const n = Number(v);
  if (v === undefined || v.trim() === "" || !Number.isInteger(n) || n < min)
    throw new CollectiveError(`${name}=${JSON.stringify(v)}: want an integer ≥ ${min}`);
  return n;
}

function seconds(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!(n > 0)) throw new CollectiveError(`${name}=${JSON.stringify(v)}: want a positive number of seconds`);
  return n * 1000;
}

export function rankEnv(env: NodeJS.ProcessEnv = process.env): RankEnv | null {
  if (env.RFT_WORLD_SIZE === undefined || env.RFT_WORLD_SIZE === "") return null;
  const worldSize = int(env, "RFT_WORLD_SIZE", 1);
  const rank = env.RFT_RANK === undefined && worldSize === 1 ? 0 : int(env, "RFT_RANK", 0);
  if (rank >= worldSize) throw new CollectiveError(`RFT_RANK=${rank} is outside RFT_WORLD_SIZE=${worldSize}`);
  if (worldSize === 1) return null;
  const peers = (env.RFT_PEERS ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  if (peers.length !== worldSize)
    throw new CollectiveError(`RFT_PEERS lists ${peers.length} addresses, RFT_WORLD_SIZE is ${worldSize}`);
  const secret = env.RFT_COLLECTIVE_SECRET ?? "";
  if (Buffer.byteLength(secret, "utf8") < MIN_SECRET_BYTES)
    throw new CollectiveError(
      `RFT_COLLECTIVE_SECRET is ${secret ? "shorter than 16 bytes" : "not set"}: with RFT_WORLD_SIZE=${worldSize} the ranks authenticate each other with it (the job's Secret, key collective-secret)`,
    );
  delete env.RFT_COLLECTIVE_SECRET;
  return {
    rank,
    worldSize,
    peers,
    secret,
    ...(env.RFT_JOB ? { job: env.RFT_JOB } : {}),
    ...(env.RFT_DATA_PORT ? { dataPort: int(env, "RFT_DATA_PORT", 1) } : {}),
    ...(seconds(env, "RFT_COLLECTIVE_TIMEOUT") !== undefined
      ? { opTimeoutMs: seconds(env, "RFT_COLLECTIVE_TIMEOUT") }
      : {}),
    ...(seconds(env, "RFT_RENDEZVOUS_TIMEOUT") !== undefined
      ? { rendezvousTimeoutMs: seconds(env, "RFT_RENDEZVOUS_TIMEOUT") }
      : {}),
  };
}
