/** The bench's flag values that are durations: `20s`, `500ms`, `1.5s`, `2m` or seconds. */

/** A flag the bench cannot use (printed with the usage). */
export class UsageError extends Error {}

/** Parses `20s`, `500ms`, `1.5s`, `2m` or a bare number of seconds, up to one hour; in ms. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  if (!match) throw new UsageError(`${JSON.stringify(text)} is not a duration (try 20s, 500ms or 20)`);
  const value = Number(match[1]) * (match[2] === 'ms' ? 1 : match[2] === 'm' ? 60_000 : 1000);
  if (value > 3_600_000) throw new UsageError(`${JSON.stringify(text)} is longer than one hour`);
  return value;
}
