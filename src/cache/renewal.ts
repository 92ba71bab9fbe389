import type { AgentError } from '../errors.ts';
import { TokenBucket } from './token-bucket.ts';

// Refresh ahead: when credentials are renewed, what the sweep does with each entry, and how a
// failed renewal backs off. The cache owns the entries; this module decides about them.

/** renewed; failed for a temporary reason (kept, retried later); dropped on a verdict about the token. */
export type RenewalOutcome = 'renewed' | 'failed' | 'dropped';

/** One renewal's outcome, for its log line: never the token or a credential. */
export interface RenewalReport {
  readonly outcome: RenewalOutcome;
  /** Renewals of this entry that had failed in a row before this one. */
  readonly failuresBefore: number;
  /** Why it failed or was dropped. */
  readonly error?: AgentError;
  /** failed: when the next try is due, from now. */
  readonly retryInMs?: number;
  /** When the credentials cached before this renewal expire (epoch ms): a failure serves them until then. */
  readonly cachedExpireAt: number;
}
/** Why an identity left the cache. */
export type EvictionReason = 'capacity' | 'token_expired' | 'idle' | 'expired' | 'rejected' | 'pod_deleted' | 'association_changed';

/** What renewal reads and moves of a cache entry (credential-entry.ts holds the rest). */
export interface Renewable {
  /** Epoch ms after which the pod can no longer send its token: nothing left to renew for. */
  readonly tokenExpiresAt: number;
  readonly expiresAt: number;
  /** When the background renewal is due; moved later after a failed attempt. */
  renewAt: number;
  renewalFailures: number;
  /** The latest expiry among credentials handed out: after it, nobody is coming back. */
  readonly servedUntil: number;
}

export interface RenewalTiming {
  /** --max-credential-retention-before-renewal */
  readonly retentionMs: number;
  /** Credentials with less left than this are never served. */
  readonly minLifetimeMs: number;
  readonly random: () => number;
}

// Renewing at two thirds of the lifetime leaves a 59-minute credential 20 minutes of slack,
// more than the 15 minutes at which botocore starts refreshing.
const RENEW_FRACTION = 2 / 3;
// Up to a tenth earlier, so that identities fetched together (a node's boot) do not renew together.
const RENEW_JITTER = 0.1;
// SDKs refresh when 5 minutes are left (JS, Go); past that point a pod should get fresh credentials.
const MUST_REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;
const RETRY_BASE_MS = 10_000;
const RETRY_CAP_MS = 5 * 60_000;

/** When fresh credentials must be waited for, and when the background renewal is due. */
export function schedule(expiresAt: number, fetchedAt: number, timing: RenewalTiming): { mustRefreshAt: number; renewAt: number } {
  const lifetime = expiresAt - fetchedAt;
  const mustRefreshAt = expiresAt - Math.max(timing.minLifetimeMs, Math.min(MUST_REFRESH_BEFORE_EXPIRY_MS, lifetime / 4));
  const renewAfter = Math.min(timing.retentionMs, lifetime * RENEW_FRACTION) * (1 - RENEW_JITTER * timing.random());
  return { mustRefreshAt, renewAt: Math.min(fetchedAt + renewAfter, mustRefreshAt) };
}

/** What a sweep does with one entry: drop it (and why), renew it, or leave it. */
export function classify(entry: Renewable, now: number, minLifetimeMs: number): EvictionReason | 'due' | 'wait' {
  if (entry.tokenExpiresAt <= now) return 'token_expired';
  if (entry.expiresAt - now < minLifetimeMs) return 'expired';
  if (now < entry.renewAt) return 'wait';
  // Every credential handed out from here has expired: the pod is not coming back for more.
  if (entry.servedUntil <= now) return 'idle';
  return 'due';
}

export interface RenewerOptions<E extends Renewable> {
  /** --max-service-qps: renewals started per second, on average. */
  readonly perSecond: number;
  /** Renewals in flight at once, so that one slow call never holds up the rest. */
  readonly concurrency: number;
  readonly now: () => number;
  readonly random: () => number;
  readonly onOutcome: (entry: E, report: RenewalReport) => void;
}

/** Starts due renewals within a rate and concurrency budget; a failed one backs off, 10 s doubling to 5 min. */
export class Renewer<E extends Renewable> {
  readonly #options: RenewerOptions<E>;
  readonly #budget: TokenBucket;
  #running = 0;

  constructor(options: RenewerOptions<E>) {
    this.#options = options;
    this.#budget = new TokenBucket(options.perSecond, options.perSecond, options.now());
  }

  /** Renews the entries (most overdue first) while the budget lasts; returns how many started. */
  start(due: readonly (readonly [string, E])[], renew: (key: string, entry: E) => Promise<unknown>): number {
    const now = this.#options.now();
    const ordered = [...due].sort((a, b) => a[1].renewAt - b[1].renewAt);
    let started = 0;
    for (const [key, entry] of ordered) {
      if (this.#running >= this.#options.concurrency || !this.#budget.take(now)) break;
      this.#running += 1;
      started += 1;
      renew(key, entry)
        .then(
          () => this.#options.onOutcome(entry, { outcome: 'renewed', failuresBefore: entry.renewalFailures, cachedExpireAt: entry.expiresAt }),
          (error: AgentError) => this.#failed(entry, error),
        )
        .finally(() => {
          this.#running -= 1;
        });
    }
    return started;
  }

  #failed(entry: E, error: AgentError): void {
    const failuresBefore = entry.renewalFailures;
    if (!error.retryable) return this.#options.onOutcome(entry, { outcome: 'dropped', failuresBefore, error, cachedExpireAt: entry.expiresAt });
    entry.renewalFailures += 1;
    const backoff = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** (entry.renewalFailures - 1));
    const retryInMs = Math.round(backoff * (0.5 + this.#options.random() / 2));
    entry.renewAt = this.#options.now() + retryInMs;
    this.#options.onOutcome(entry, { outcome: 'failed', failuresBefore, error, retryInMs, cachedExpireAt: entry.expiresAt });
  }
}
