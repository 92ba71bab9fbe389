import { hash } from 'node:crypto';
import { agentError, isAgentError } from '../errors.ts';
import type { CredentialExchange } from '../upstream/types.ts';
import { type CredentialEntry, createEntry } from './credential-entry.ts';

/** How a request was answered: from the cache, by its own upstream call, by joining another's, or from stale credentials during an upstream failure. */
export type CacheOutcome = 'hit' | 'miss' | 'coalesced' | 'stale';

export interface CacheLookup {
  readonly entry: CredentialEntry;
  readonly outcome: CacheOutcome;
}

export interface CredentialCacheOptions {
  readonly exchange: CredentialExchange;
  /** Identities kept; 0 disables caching (every request goes upstream, still single-flight). */
  readonly maxSize: number;
  /** Longest time credentials are served before renewal; 0 disables caching. */
  readonly retentionMs: number;
  /** Credentials with less left than this are never served. */
  readonly minLifetimeMs?: number;
  readonly now?: () => number;
}

export const MIN_CREDENTIAL_LIFETIME_MS = 15_000;

/**
 * Credentials by identity. Keys are SHA-256 digests of the token, so no raw token is kept as a key;
 * concurrent misses for one key share one upstream call; Map order gives least-recently-used eviction.
 */
export class CredentialCache {
  readonly #exchange: CredentialExchange;
  readonly #maxSize: number;
  readonly #timing: { retentionMs: number; minLifetimeMs: number };
  readonly #now: () => number;
  readonly #entries = new Map<string, CredentialEntry>();
  readonly #inflight = new Map<string, Promise<CredentialEntry>>();

  constructor(options: CredentialCacheOptions) {
    this.#exchange = options.exchange;
    this.#maxSize = options.retentionMs > 0 ? options.maxSize : 0;
    this.#timing = { retentionMs: options.retentionMs, minLifetimeMs: options.minLifetimeMs ?? MIN_CREDENTIAL_LIFETIME_MS };
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  async get(token: string): Promise<CacheLookup> {
    const key = hash('sha256', token, 'base64');
    const cached = this.#entries.get(key);
    if (cached !== undefined && this.#now() < cached.renewAt) {
      this.#touch(key, cached);
      return { entry: cached, outcome: 'hit' };
    }
    const pending = this.#inflight.get(key);
    const outcome: CacheOutcome = pending === undefined ? 'miss' : 'coalesced';
    try {
      return { entry: await (pending ?? this.#fetch(key, token)), outcome };
    } catch (error) {
      return { entry: this.#fallback(key, cached, error), outcome: 'stale' };
    }
  }

  clear(): void {
    this.#entries.clear();
  }

  #fetch(key: string, token: string): Promise<CredentialEntry> {
    const call = this.#exchange
      .exchange(token)
      .then((result) => {
        const entry = createEntry(result, this.#now(), this.#timing);
        if (entry.expiresAt - entry.fetchedAt < this.#timing.minLifetimeMs) {
          throw agentError('UpstreamCredentialsExpired', 'EKS Auth answered credentials that expire too soon to hand out', {
            upstreamRequestId: result.requestId,
          });
        }
        this.#store(key, entry);
        return entry;
      })
      .finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, call);
    return call;
  }

  /** Stale credentials stand in while the failure is temporary; a verdict on the token drops them. */
  #fallback(key: string, cached: CredentialEntry | undefined, error: unknown): CredentialEntry {
    const retryable = isAgentError(error) && error.retryable;
    if (!retryable) this.#entries.delete(key);
    if (retryable && cached !== undefined && cached.expiresAt - this.#now() >= this.#timing.minLifetimeMs) return cached;
    throw error;
  }

  #store(key: string, entry: CredentialEntry): void {
    if (this.#maxSize === 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#maxSize) this.#entries.delete(this.#entries.keys().next().value as string);
  }

  #touch(key: string, entry: CredentialEntry): void {
    this.#entries.delete(key);
    this.#entries.set(key, entry);
  }
}
