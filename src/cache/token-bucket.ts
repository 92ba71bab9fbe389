/**
 * A token bucket on an injected clock: `perSecond` tokens a second on average, at most `burst`
 * saved up. The miss limiter and the renewal budget both spend from these.
 */
export class TokenBucket {
  readonly perSecond: number;
  readonly burst: number;
  #tokens: number;
  #at: number;

  /** Starts full. */
  constructor(perSecond: number, burst: number, now: number) {
    this.perSecond = perSecond;
    this.burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  /** Adds what has dripped in since the last call; returns whether a whole token is there. */
  refill(now: number): boolean {
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) / 1000) * this.perSecond);
    this.#at = now;
    return this.#tokens >= 1;
  }

  /** Spends one token, already known to be there (refill() said so). */
  spend(): void {
    this.#tokens -= 1;
  }

  /** refill() and spend() in one: for a single budget. */
  take(now: number): boolean {
    if (!this.refill(now)) return false;
    this.spend();
    return true;
  }

  /** As of the last refill. */
  get full(): boolean {
    return this.#tokens >= this.burst;
  }

  /** Seconds until a whole token is there, as of the last refill. */
  get secondsToNext(): number {
    return Math.max(0, (1 - this.#tokens) / this.perSecond);
  }
}
