import { inspect } from 'node:util';

export interface WaitForOptions {
  /** Give up after this long. */
  timeoutMs: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
  /** What we were waiting for; leads the timeout error. */
  message?: string;
  signal?: AbortSignal;
}

/** Values that mean "not yet": anything else is the result. */
type NotYet = undefined | false;

/**
 * Polls `fn` until it returns something other than `undefined`/`false`, and
 * resolves with that value. Errors thrown by `fn` count as "not yet" (the thing
 * being polled is often not up yet), but the last one is kept so that a timeout
 * says *why* it never succeeded rather than just that it didn't.
 */
export async function waitFor<T>(
  fn: () => Promise<T | NotYet> | T | NotYet,
  opts: WaitForOptions,
): Promise<T> {
  const { timeoutMs, intervalMs = 100, message = 'condition', signal } = opts;
  const started = Date.now();
  const deadline = started + timeoutMs;
  let attempts = 0;
  let last: { value: unknown } | { error: unknown } | undefined;

  for (;;) {
    signal?.throwIfAborted();
    attempts++;
    try {
      // A hung attempt must not hold us past the deadline.
      const value = await withDeadline(Promise.resolve(fn()), deadline);
      if (value !== undefined && value !== false) return value as T;
      last = { value };
    } catch (error) {
      if (error === DEADLINE) break;
      last = { error };
    }
    if (Date.now() + intervalMs > deadline) break;
    await sleep(intervalMs, signal);
  }

  throw new Error(
    `waitFor timed out after ${Date.now() - started} ms (${attempts} attempts): ${message}; ` +
      describeLast(last),
  );
}

const DEADLINE = Symbol('deadline');

function withDeadline<T>(promise: Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(DEADLINE), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function describeLast(last: { value: unknown } | { error: unknown } | undefined): string {
  if (last === undefined) return 'the first attempt never finished';
  if ('error' in last) {
    const e = last.error;
    return `last error: ${e instanceof Error ? (e.stack ?? e.message) : inspect(e)}`;
  }
  return `last value: ${inspect(last.value, { depth: 4, breakLength: Infinity })}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
