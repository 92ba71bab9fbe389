import { type AgentError, agentError, isAgentError } from '../errors.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { CredentialExchange } from '../upstream/types.ts';
import { type CredentialEntry, type EntryRequest, createEntry } from './credential-entry.ts';
import { NegativeCache } from './negative-cache.ts';
import { type EvictionReason, type RenewalReport, type RenewalTiming, Renewer, classify } from './renewal.ts';

export type { EvictionReason, RenewalOutcome, RenewalReport } from './renewal.ts';

/**
 * How a request was answered: from the cache; by its own upstream call; by joining another's;
 * from still-valid credentials during an upstream failure; from a remembered upstream verdict.
 */
export type LookupOutcome = 'hit' | 'miss' | 'coalesced' | 'stale' | 'negative' | 'limited';

/** What the cache is asked for: a key, and the token to exchange (and renew with) under it. */
export interface CacheRequest extends EntryRequest {
  /**
   * SHA-256 of the token; or, for a verified token, of the pod identity (cluster, namespace,
   * service account, pod uid), so that a rotated token finds its credentials.
   */
  readonly key: string;
  /** Who asks (the source address), for the per-client limit on misses. */
  readonly client?: string;
}

export type CacheResult =
  | { readonly ok: true; readonly outcome: LookupOutcome; readonly entry: CredentialEntry }
  | { readonly ok: false; readonly outcome: LookupOutcome; readonly error: AgentError };

/** What the cache tells metrics; it knows nothing of Prometheus. */
export interface CacheObserver {
  lookup?(outcome: LookupOutcome): void;
  /** Each background renewal's outcome, and whose (undefined for an unverified token). */
  renewal?(report: RenewalReport, identity: VerifiedIdentity | undefined): void;
  eviction?(reason: EvictionReason): void;
}

export interface CredentialCacheOptions {
  readonly exchange: CredentialExchange;
  /** Identities kept; 0 disables caching (every request goes upstream, still single-flight). */
  readonly maxSize: number;
  /** Longest time credentials are served before renewal; 0 disables caching. */
  readonly retentionMs: number;
  /** Credentials with less left than this are never served. */
  readonly minLifetimeMs?: number;
  /** How long a non-retryable upstream verdict on a token is remembered; 0 disables. */
  readonly negativeTtlMs?: number;
  /** Background renewals started per second, on average (`--max-service-qps`). */
  readonly renewalsPerSecond?: number;
  /** Background renewals in flight at once, so that one slow call never holds up the rest. */
  readonly renewalConcurrency?: number;
  readonly sweepIntervalMs?: number;
  readonly now?: () => number;
  readonly random?: () => number;
  readonly observer?: CacheObserver;
  /** Asked before a request starts an upstream call; an error refuses it (and stale credentials may stand in). */
  readonly admitMiss?: (request: CacheRequest) => AgentError | undefined;
}

export const MIN_CREDENTIAL_LIFETIME_MS = 15_000;

/**
 * Credentials by cache key (trust/request-identity.ts makes it). Concurrent misses share one upstream
 * call; when full, the least recently used entry goes; a periodic sweep hands what is due to the
 * Renewer (renewal.ts) and forgets identities nobody can come back for.
 */
export class CredentialCache {
  readonly #exchange: CredentialExchange;
  readonly #maxSize: number;
  readonly #timing: RenewalTiming;
  readonly #minLifetimeMs: number;
  readonly #sweepIntervalMs: number;
  readonly #now: () => number;
  readonly #observer: CacheObserver;
  readonly #admitMiss: (request: CacheRequest) => AgentError | undefined;
  readonly #entries = new Map<string, CredentialEntry>();
  readonly #inflight = new Map<string, InFlight>();
  /** Pods deleted recently (uid -> when), so that a fetch still in flight for one is not stored. */
  readonly #deletedPods = new Map<string, number>();
  readonly #negative: NegativeCache;
  readonly #renewer: Renewer<CredentialEntry>;
  #timer: NodeJS.Timeout | undefined;
  /** Counts hits and stores: an entry's lastUsed is this count at its latest one. */
  #uses = 0;

  constructor(options: CredentialCacheOptions) {
    this.#exchange = options.exchange;
    this.#maxSize = options.retentionMs > 0 ? options.maxSize : 0;
    this.#minLifetimeMs = options.minLifetimeMs ?? MIN_CREDENTIAL_LIFETIME_MS;
    this.#timing = { retentionMs: options.retentionMs, minLifetimeMs: this.#minLifetimeMs, random: options.random ?? Math.random };
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 1000;
    this.#now = options.now ?? Date.now;
    this.#observer = options.observer ?? {};
    this.#admitMiss = options.admitMiss ?? (() => undefined);
    this.#negative = new NegativeCache(options.negativeTtlMs ?? 10_000, this.#maxSize);
    this.#renewer = new Renewer({
      perSecond: options.renewalsPerSecond ?? 3,
      concurrency: options.renewalConcurrency ?? 4,
      now: this.#now,
      random: this.#timing.random,
      onOutcome: (entry, report) => this.#observer.renewal?.(report, entry.identity),
    });
  }

  get size(): number {
    return this.#entries.size;
  }

  /** When the oldest credentials still cached were fetched (epoch ms), for the age gauge. */
  oldestFetchedAt(): number | undefined {
    let oldest: number | undefined;
    for (const entry of this.#entries.values()) if (oldest === undefined || entry.fetchedAt < oldest) oldest = entry.fetchedAt;
    return oldest;
  }

  /** The synchronous fast path: fresh-enough credentials for the request, or undefined. */
  hit(request: CacheRequest): CredentialEntry | undefined {
    const cached = this.#entries.get(request.key);
    if (cached === undefined || this.#now() >= cached.mustRefreshAt) return undefined;
    // A use is a count in the entry, not a move to the Map's end: V8 reallocates a small Map's table
    // on delete and set, in old space once the Map is old, so every hit made garbage only a full
    // collection frees (under wrk, four in 5 s, and a p99 four times the bare server's; bench/README.md).
    cached.lastUsed = ++this.#uses;
    adoptNewerToken(cached, request);
    this.#served(cached, 'hit');
    return cached;
  }

  /** A hit, or the upstream call (shared with any already in flight), or a remembered verdict. */
  async get(request: CacheRequest): Promise<CacheResult> {
    const entry = this.hit(request);
    if (entry !== undefined) return { ok: true, outcome: 'hit', entry };
    const { key } = request;
    const cached = this.#entries.get(key);
    if (cached !== undefined) adoptNewerToken(cached, request);
    const verdict = this.#negative.get(key, this.#now());
    if (verdict !== undefined) return this.#report({ ok: false, outcome: 'negative', error: verdict });
    const pending = this.#inflight.get(key)?.call;
    const outcome: LookupOutcome = pending === undefined ? 'miss' : 'coalesced';
    const refused = pending === undefined ? this.#admitMiss(request) : undefined;
    if (refused !== undefined) {
      if (cached !== undefined && this.#usable(cached)) return this.#served(cached, 'stale');
      return this.#report({ ok: false, outcome: 'limited', error: refused });
    }
    try {
      return this.#served(await (pending ?? this.#fetch(key, request, false)), outcome);
    } catch (caught) {
      const error = caught as AgentError;
      // Not if invalidate() dropped them meanwhile: they may be the old role's.
      if (error.retryable && cached !== undefined && this.#entries.get(key) === cached && this.#usable(cached)) return this.#served(cached, 'stale');
      return this.#report({ ok: false, outcome, error });
    }
  }

  /** The pod is gone: its credentials are dropped and never renewed. */
  forgetPod(podUid: string): void {
    for (const [key, entry] of this.#entries) if (entry.identity?.podUid === podUid) this.#evict(key, 'pod_deleted');
    this.#deletedPods.set(podUid, this.#now());
  }

  /**
   * The role behind some identities changed (an STS association edited, added or removed): their
   * credentials go, and every remembered refusal with them, so the next request asks anew.
   */
  invalidate(affected: (identity: VerifiedIdentity) => boolean): void {
    for (const [key, entry] of this.#entries) if (entry.identity !== undefined && affected(entry.identity)) this.#evict(key, 'association_changed');
    // Calls begun before the change may be for the old role: nobody new joins them, and what they
    // bring back (credentials or a refusal) is answered to those already waiting but never kept.
    for (const [key, flight] of this.#inflight) {
      if (flight.identity === undefined || !affected(flight.identity)) continue;
      flight.superseded = true;
      this.#inflight.delete(key);
    }
    this.#negative.clear();
  }

  /** One pass: forget the dead, start due renewals within budget. Returns how many started. forEach, not for-of: for-of makes an array per entry, and V8 keeps the pages of a heap that allocates (bench/README.md). */
  sweep(): number {
    const now = this.#now();
    this.#negative.prune(now);
    // A call outlives its pod by at most the retry budget; a minute is ample.
    for (const [uid, at] of this.#deletedPods) if (now - at > 60_000) this.#deletedPods.delete(uid);
    const due: [string, CredentialEntry][] = [];
    this.#entries.forEach((entry, key) => {
      if (this.#inflight.has(key)) return;
      const verdict = classify(entry, now, this.#minLifetimeMs);
      if (verdict === 'due') due.push([key, entry]);
      else if (verdict !== 'wait') this.#evict(key, verdict);
    });
    return this.#renewer.start(due, (key, entry) => this.#fetch(key, entry, true));
  }

  /** Sweeps every interval until close(); the timer never keeps the process alive. */
  start(): void {
    this.#timer ??= setInterval(() => this.sweep(), this.#sweepIntervalMs).unref();
  }

  /** Stops renewing. Calls in flight complete on their own. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #fetch(key: string, request: EntryRequest, background: boolean): Promise<CredentialEntry> {
    // The callbacks run after `flight` exists: a call always settles asynchronously.
    const call = this.#exchange
      .exchange({ token: request.token, identity: request.identity }, { singleAttempt: background })
      .then(
        (result) => {
          const now = this.#now();
          if (result.credentials.expiresAt - now < this.#minLifetimeMs) {
            throw agentError('UpstreamCredentialsExpired', `${this.#exchange.name} answered credentials that expire too soon to hand out`, { upstreamRequestId: result.requestId });
          }
          const entry = createEntry(request, result, now, this.#timing);
          entry.servedUntil = this.#entries.get(key)?.servedUntil ?? 0;
          // The pod was deleted, or its association changed, while the call was in flight: answer
          // (the credentials are valid), but keep nothing that could outlive the change.
          const podUid = request.identity?.podUid;
          const podGone = podUid !== undefined && this.#deletedPods.has(podUid);
          if (!podGone && !flight.superseded) this.#store(key, entry);
          return entry;
        },
        (caught: unknown) => {
          const error = isAgentError(caught) ? caught : agentError('InternalError', 'the credential exchange failed', { cause: caught });
          if (!error.retryable && !flight.superseded) {
            if (this.#entries.has(key)) this.#evict(key, 'rejected');
            this.#negative.remember(key, error, this.#now());
          }
          throw error;
        },
      )
      .finally(() => {
        if (this.#inflight.get(key) === flight) this.#inflight.delete(key);
      });
    const flight: InFlight = { call, identity: request.identity, superseded: false };
    this.#inflight.set(key, flight);
    return call;
  }

  #store(key: string, entry: CredentialEntry): void {
    if (this.#maxSize === 0) return;
    entry.lastUsed = ++this.#uses;
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#maxSize) this.#evict(this.#leastRecentlyUsed(), 'capacity');
  }

  /**
   * A scan of every entry, only when the cache is full and a new identity comes in: about 15 µs at
   * the default --max-cache-size 2,000 and 130 µs at 20,000 (measured), where the miss that brought
   * it cost about 2 ms of CPU and an upstream round trip (bench/README.md, cold burst).
   */
  #leastRecentlyUsed(): string {
    let found = '';
    let oldest = Number.POSITIVE_INFINITY;
    for (const [key, entry] of this.#entries) {
      if (entry.lastUsed < oldest) {
        oldest = entry.lastUsed;
        found = key;
      }
    }
    return found;
  }

  #evict(key: string, reason: EvictionReason): void {
    this.#entries.delete(key);
    this.#observer.eviction?.(reason);
  }

  #usable(entry: CredentialEntry): boolean {
    return entry.expiresAt - this.#now() >= this.#minLifetimeMs;
  }

  #served(entry: CredentialEntry, outcome: LookupOutcome): CacheResult {
    if (entry.expiresAt > entry.servedUntil) entry.servedUntil = entry.expiresAt;
    return this.#report({ ok: true, outcome, entry });
  }

  #report(result: CacheResult): CacheResult {
    this.#observer.lookup?.(result.outcome);
    return result;
  }
}

/** One upstream call under way, shared by every request for its key. */
interface InFlight {
  readonly call: Promise<CredentialEntry>;
  readonly identity: VerifiedIdentity | undefined;
  /** Set when the identity's association changed during the call: its outcome is not kept. */
  superseded: boolean;
}

/** A kubelet rotation brings a token that lives longer: renew with it from now on. */
function adoptNewerToken(entry: CredentialEntry, request: EntryRequest): void {
  if (request.tokenExpiresAt > entry.tokenExpiresAt) {
    entry.token = request.token;
    entry.tokenExpiresAt = request.tokenExpiresAt;
  }
}
