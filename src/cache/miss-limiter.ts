import { type AgentError, agentError } from '../errors.ts';

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

interface Bucket {
  tokens: number;
  at: number;
}

/** Addresses or identities tracked at once; a flood of new ones cannot grow the maps past this. */
const MAX_TRACKED = 10_000;

/**
 * Token buckets for misses that would call EKS Auth: per identity, per source address and for the node.
 * Hits, coalesced requests and local refusals never come here, so a misbehaving pod is limited
 * (429 with Retry-After) before it spends the account's quota, and well-behaved pods keep theirs.
 */
export class MissLimiter {
  readonly #limits: MissLimits;
  readonly #now: () => number;
  readonly #clients = new Map<string, Bucket>();
  readonly #identities = new Map<string, Bucket>();
  readonly #node: Bucket;

  constructor(limits: MissLimits, now: () => number = Date.now) {
    this.#limits = limits;
    this.#now = now;
    this.#node = { tokens: limits.nodeBurst, at: now() };
  }

  /**
   * Takes one miss for the identity (its cache key), the client (source address) and the node, or
   * says how long to wait. The identity's own budget keeps one token from using up its address's,
   * which host-network pods share.
   */
  admit(identity: string, client: string): AgentError | undefined {
    const now = this.#now();
    const { perIdentityPerSecond, perIdentityBurst, perClientPerSecond, perClientBurst, nodePerSecond, nodeBurst } = this.#limits;
    const byIdentity = bucketFor(this.#identities, identity, now, perIdentityPerSecond, perIdentityBurst);
    const byClient = bucketFor(this.#clients, client, now, perClientPerSecond, perClientBurst);
    refill(this.#node, now, nodePerSecond, nodeBurst);
    if (byIdentity.tokens < 1) return limited('this identity', (1 - byIdentity.tokens) / perIdentityPerSecond);
    if (byClient.tokens < 1) return limited('this pod', (1 - byClient.tokens) / perClientPerSecond);
    if (this.#node.tokens < 1) return limited('this node', (1 - this.#node.tokens) / nodePerSecond);
    byIdentity.tokens -= 1;
    byClient.tokens -= 1;
    this.#node.tokens -= 1;
    return undefined;
  }
}

/** The key's bucket, refilled to now; a map at its bound first lets go of full buckets, else its oldest. */
function bucketFor(buckets: Map<string, Bucket>, key: string, now: number, perSecond: number, burst: number): Bucket {
  let bucket = buckets.get(key);
  if (bucket === undefined) {
    if (buckets.size >= MAX_TRACKED) {
      for (const [other, candidate] of buckets) {
        refill(candidate, now, perSecond, burst);
        if (candidate.tokens >= burst) buckets.delete(other);
      }
      if (buckets.size >= MAX_TRACKED) buckets.delete(buckets.keys().next().value as string);
    }
    bucket = { tokens: burst, at: now };
    buckets.set(key, bucket);
  }
  refill(bucket, now, perSecond, burst);
  return bucket;
}

function refill(bucket: Bucket, now: number, perSecond: number, burst: number): void {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
  bucket.at = now;
}

function limited(who: string, waitSeconds: number): AgentError {
  const retryAfterSeconds = Math.max(1, Math.ceil(waitSeconds));
  return agentError('TooManyRequests', `too many requests needing EKS Auth from ${who}; retry after ${retryAfterSeconds} s`, { retryAfterSeconds });
}
