import { type AgentError, agentError } from '../errors.ts';

export interface MissLimits {
  /** Upstream-bound misses one source address may start per second, on average. */
  readonly perClientPerSecond: number;
  readonly perClientBurst: number;
  /** Upstream-bound misses the whole node may start per second: the account's EKS Auth quota is shared. */
  readonly nodePerSecond: number;
  readonly nodeBurst: number;
}

export const DEFAULT_MISS_LIMITS: MissLimits = Object.freeze({ perClientPerSecond: 15, perClientBurst: 60, nodePerSecond: 1000, nodeBurst: 1000 });

interface Bucket {
  tokens: number;
  at: number;
}

/** Addresses tracked at once; a flood of spoofed sources cannot grow the map past this. */
const MAX_CLIENTS = 10_000;

/**
 * Token buckets for misses that would call EKS Auth: one per source address and one for the node.
 * Hits, coalesced requests and local refusals never come here, so a misbehaving pod is limited
 * (429 with Retry-After) before it spends the account's quota, and well-behaved pods keep theirs.
 */
export class MissLimiter {
  readonly #limits: MissLimits;
  readonly #now: () => number;
  readonly #clients = new Map<string, Bucket>();
  readonly #node: Bucket;

  constructor(limits: MissLimits, now: () => number = Date.now) {
    this.#limits = limits;
    this.#now = now;
    this.#node = { tokens: limits.nodeBurst, at: now() };
  }

  /** Takes one miss for the client, or says how long to wait. */
  admit(client: string): AgentError | undefined {
    const now = this.#now();
    const bucket = this.#clientBucket(client, now);
    refill(bucket, now, this.#limits.perClientPerSecond, this.#limits.perClientBurst);
    refill(this.#node, now, this.#limits.nodePerSecond, this.#limits.nodeBurst);
    if (bucket.tokens < 1) return limited('this pod', (1 - bucket.tokens) / this.#limits.perClientPerSecond);
    if (this.#node.tokens < 1) return limited('this node', (1 - this.#node.tokens) / this.#limits.nodePerSecond);
    bucket.tokens -= 1;
    this.#node.tokens -= 1;
    return undefined;
  }

  #clientBucket(client: string, now: number): Bucket {
    let bucket = this.#clients.get(client);
    if (bucket === undefined) {
      if (this.#clients.size >= MAX_CLIENTS) this.#prune(now);
      bucket = { tokens: this.#limits.perClientBurst, at: now };
      this.#clients.set(client, bucket);
    }
    return bucket;
  }

  /** Full buckets carry no state worth keeping; if none is full, the oldest goes. */
  #prune(now: number): void {
    for (const [client, bucket] of this.#clients) {
      refill(bucket, now, this.#limits.perClientPerSecond, this.#limits.perClientBurst);
      if (bucket.tokens >= this.#limits.perClientBurst) this.#clients.delete(client);
    }
    if (this.#clients.size >= MAX_CLIENTS) this.#clients.delete(this.#clients.keys().next().value as string);
  }
}

function refill(bucket: Bucket, now: number, perSecond: number, burst: number): void {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
  bucket.at = now;
}

function limited(who: string, waitSeconds: number): AgentError {
  const retryAfterSeconds = Math.max(1, Math.ceil(waitSeconds));
  return agentError('TooManyRequests', `too many requests needing EKS Auth from ${who}; retry after ${retryAfterSeconds} s`, { retryAfterSeconds });
}
