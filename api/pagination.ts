/**
 * OpenAI's cursor pagination, pure: `after` (an id of the previous page's last item), `limit` (1–100), and the
 * page `{object: "list", data, has_more, first_id, last_id}`. Items come in the order the endpoint lists them.
 */
import { badRequest } from "./errors.js";

export interface Page<T> {
  object: "list";
  data: T[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}

export function parseLimit(raw: string | null, fallback: number, max = 100): number {
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw badRequest(`Invalid 'limit': expected an integer between 1 and ${max}, got '${raw}'.`, "limit");
  return n;
}

export function paginate<T extends { id: string }>(items: readonly T[], after: string | null, limit: number): Page<T> {
  let start = 0;
  if (after !== null) {
    const i = items.findIndex((x) => x.id === after);
    // OpenAI answers an unknown cursor with an empty page, not an error.
    start = i < 0 ? items.length : i + 1;
  }
  const data = items.slice(start, start + limit);
  return {
    object: "list",
    data,
    has_more: start + limit < items.length,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
  };
}
