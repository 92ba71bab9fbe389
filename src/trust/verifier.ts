import type { AgentError } from '../errors.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { ProjectedToken } from '../token/projected-token.ts';

/** Local verification of a token: the cluster's keys (jwks) or the API server's TokenReview. */
export interface TokenVerifier {
  readonly mode: 'jwks' | 'tokenreview';
  /** The remembered verdict for this token, if any: lets a repeat request stay synchronous. */
  cached(token: ProjectedToken, now: number): VerifiedIdentity | AgentError | undefined;
  verify(token: ProjectedToken, now: number): Promise<VerifiedIdentity>;
}

/**
 * Verdicts by token key, each until the token expires (a good one) or for a short while (a bad
 * one), bounded; the map is insertion-ordered, so the oldest verdict goes first.
 */
export class VerdictMemo {
  readonly #maxSize: number;
  readonly #rejectionTtlMs: number;
  readonly #verdicts = new Map<string, { verdict: VerifiedIdentity | AgentError; until: number }>();

  constructor(maxSize = 4096, rejectionTtlMs = 10_000) {
    this.#maxSize = maxSize;
    this.#rejectionTtlMs = rejectionTtlMs;
  }

  get(token: ProjectedToken, now: number): VerifiedIdentity | AgentError | undefined {
    const entry = this.#verdicts.get(token.digest);
    if (entry === undefined) return undefined;
    if (now < entry.until) return entry.verdict;
    this.#verdicts.delete(token.digest);
    return undefined;
  }

  remember(token: ProjectedToken, verdict: VerifiedIdentity | AgentError, now: number, goodForMs?: number): void {
    const until = verdict instanceof Error ? now + this.#rejectionTtlMs : Math.min(token.expiresAt * 1000, now + (goodForMs ?? Number.POSITIVE_INFINITY));
    if (this.#verdicts.size >= this.#maxSize) this.#verdicts.delete(this.#verdicts.keys().next().value as string);
    this.#verdicts.set(token.digest, { verdict, until });
  }
}
