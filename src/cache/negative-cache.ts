import type { AgentError } from '../errors.ts';

/**
 * Verdicts the upstream gave on a token (no association, access denied...), remembered for a few
 * seconds: SDKs retry a 4xx three or four times, and each retry would cost the account's quota.
 */
export class NegativeCache {
  readonly #ttlMs: number;
  readonly #maxSize: number;
  readonly #verdicts = new Map<string, { error: AgentError; until: number }>();

  constructor(ttlMs: number, maxSize: number) {
    this.#ttlMs = ttlMs;
    this.#maxSize = maxSize;
  }

  get size(): number {
    return this.#verdicts.size;
  }

  get(key: string, now: number): AgentError | undefined {
    const verdict = this.#verdicts.get(key);
    if (verdict === undefined) return undefined;
    if (now < verdict.until) return verdict.error;
    this.#verdicts.delete(key);
    return undefined;
  }

  remember(key: string, error: AgentError, now: number): void {
    if (this.#ttlMs <= 0 || this.#maxSize <= 0) return;
    this.#verdicts.delete(key);
    if (this.#verdicts.size >= this.#maxSize) this.#verdicts.delete(this.#verdicts.keys().next().value as string);
    this.#verdicts.set(key, { error, until: now + this.#ttlMs });
  }

  forget(key: string): void {
    this.#verdicts.delete(key);
  }

  /** Forgets every verdict: what they were given on (the associations) has changed. */
  clear(): void {
    this.#verdicts.clear();
  }

  /** Drops verdicts past their time, so the map does not hold the keys of tokens never seen again. */
  prune(now: number): void {
    // forEach: for-of would make an array per verdict each second (credential-cache.ts, sweep).
    this.#verdicts.forEach((verdict, key) => {
      if (now >= verdict.until) this.#verdicts.delete(key);
    });
  }
}
