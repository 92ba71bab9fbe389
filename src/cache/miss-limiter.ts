import { type AgentError, agentError } from '../errors.ts';
import { TokenBucket } from './token-bucket.ts';

export interface MissLimits {
  /** Upstream-bound misses one identity (token, or verified pod identity) may start per second. */
  readonly perIdentityPerSecond: number;
  readonly perIdentityBurst: number;
  /** Upstream-bound misses one source address may start per second, on average. */
  readonly perClientPerSecond: number;
  readonly perClientBurst: number;
  /** Upstream-bound misses the whole node may start per second: the account's EKS Auth quota is shared. */
  readonly nodePerSecond: number;
  readonly nodeBurst: number;
}

// An identity needs one call per renewal; five in a burst cover an SDK's retries of a failure.
export const DEFAULT_MISS_LIMITS: MissLimits = Object.freeze({ perIdentityPerSecond: 1, perIdentityBurst: 5, perClientPerSecond: 15, perClientBurst: 60, nodePerSecond: 1000, nodeBurst: 1000 });

/** Addresses or identities tracked at once; a flood of new ones cannot grow the maps past this. */
const MAX_TRACKED = 10_000;
/**
 * How often full buckets are let go of. A full bucket admits exactly as a new one does, so dropping
 * it changes nothing; kept, each identity that ever missed would hold one (about 150 bytes) for good.
 */
const SWEEP_MS = 10_000;

/**
 * Token buckets for misses that would call EKS Auth: per identity, per source address and for the node.
 * Hits, coalesced requests and local refusals never come here, so a misbehaving pod is limited
 * (429 with Retry-After) before it spends the account's quota, and well-behaved pods keep theirs.
 */
export class MissLimiter {
  readonly #limits: MissLimits;
  readonly #now: () => number;
  readonly #clients = new Map<string, TokenBucket>();
  readonly #identities = new Map<string, TokenBucket>();
  readonly #node: TokenBucket;
  #sweptAt: number;

  constructor(limits: MissLimits, now: () => number = Date.now) {
    this.#limits = limits;
    this.#now = now;
    this.#node = new TokenBucket(limits.nodePerSecond, limits.nodeBurst, now());
    this.#sweptAt = now();
  }

  /**
   * Takes one miss for the identity (its cache key), the client (source address) and the node, or
   * says how long to wait. The identity's own budget keeps one token from using up its address's,
   * which host-network pods share. Nothing is spent unless all three have room.
   */
  /** Buckets held (identities, addresses): what the limiter costs in memory. */
  get tracked(): { readonly identities: number; readonly clients: number } {
    return { identities: this.#identities.size, clients: this.#clients.size };
  }

  admit(identity: string, client: string): AgentError | undefined {
    const now = this.#now();
    if (now - this.#sweptAt >= SWEEP_MS) {
      this.#sweptAt = now;
      dropFull(this.#identities, now);
      dropFull(this.#clients, now);
    }
    const { perIdentityPerSecond, perIdentityBurst, perClientPerSecond, perClientBurst } = this.#limits;
    const byIdentity = bucketFor(this.#identities, identity, now, perIdentityPerSecond, perIdentityBurst);
    const byClient = bucketFor(this.#clients, client, now, perClientPerSecond, perClientBurst);
    const nodeHasRoom = this.#node.refill(now);
    if (!byIdentity.refill(now)) return limited('this identity', byIdentity.secondsToNext);
    if (!byClient.refill(now)) return limited('this pod', byClient.secondsToNext);
    if (!nodeHasRoom) return limited('this node', this.#node.secondsToNext);
    byIdentity.spend();
    byClient.spend();
    this.#node.spend();
    return undefined;
  }
}

/** The key's bucket; a map at its bound first lets go of full buckets, else its oldest. */
function bucketFor(buckets: Map<string, TokenBucket>, key: string, now: number, perSecond: number, burst: number): TokenBucket {
  let bucket = buckets.get(key);
  if (bucket === undefined) {
    if (buckets.size >= MAX_TRACKED) {
      dropFull(buckets, now);
      if (buckets.size >= MAX_TRACKED) buckets.delete(buckets.keys().next().value as string);
    }
    bucket = new TokenBucket(perSecond, burst, now);
    buckets.set(key, bucket);
  }
  return bucket;
}

function dropFull(buckets: Map<string, TokenBucket>, now: number): void {
  for (const [key, bucket] of buckets) {
    bucket.refill(now);
    if (bucket.full) buckets.delete(key);
  }
}

function limited(who: string, waitSeconds: number): AgentError {
  const retryAfterSeconds = Math.max(1, Math.ceil(waitSeconds));
  return agentError('TooManyRequests', `too many requests needing EKS Auth from ${who}; retry after ${retryAfterSeconds} s`, { retryAfterSeconds });
}
