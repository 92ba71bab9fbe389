import type { CacheRequest } from '../cache/credential-cache.ts';
import type { PodIndex } from '../k8s/pod-index.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import { type ProjectedToken, sha256 } from '../token/projected-token.ts';
import { bindToPod, unmapped } from './pod-binding.ts';
import type { TokenVerifier } from './verifier.ts';

// The one place where a request becomes a cache key: by the token itself, or by the pod it proved to be.

export interface RequestIdentityOptions {
  readonly clusterName: string;
  /** Absent with --token-verification none. */
  readonly verifier: TokenVerifier | undefined;
  /** Absent with --pod-binding off. */
  readonly pods: PodIndex | undefined;
  readonly now: () => number;
}

/** From a checked token and the request's source address to what the cache is asked for. */
export type ResolveIdentity = (token: ProjectedToken, remoteAddress: string | undefined) => CacheRequest | Promise<CacheRequest>;

/** An unverified token is keyed by its own SHA-256 (its digest): a rotated token is a new identity. */
export const resolveUnverified: ResolveIdentity = (token, remoteAddress) => ({
  key: token.digest,
  token: token.raw,
  tokenExpiresAt: token.expiresAt * 1000,
  identity: undefined,
  client: unmapped(remoteAddress) ?? 'unknown',
});

/** A verified token is keyed by its pod (cluster, namespace, service account, uid): the kubelet's rotation is a hit. */
function podKey(clusterName: string, identity: VerifiedIdentity): string {
  return sha256(['pod', clusterName, identity.namespace, identity.serviceAccount, identity.podUid].join('\0'));
}

/**
 * A verified token is bound to a live pod on this node (and, off the host network, to that pod's
 * address) and keyed by the pod's identity. Synchronous when the verdict is remembered.
 */
export function createIdentityResolver(options: RequestIdentityOptions): ResolveIdentity {
  const { verifier } = options;
  if (verifier === undefined) return resolveUnverified;

  // The verdict memo hands out the same identity object for a token: its key is hashed once, not per request.
  const keys = new WeakMap<VerifiedIdentity, string>();
  const keyOf = (identity: VerifiedIdentity): string => {
    let key = keys.get(identity);
    if (key === undefined) keys.set(identity, (key = podKey(options.clusterName, identity)));
    return key;
  };
  const bound = (token: ProjectedToken, identity: VerifiedIdentity, remoteAddress: string | undefined): CacheRequest => {
    if (options.pods !== undefined) bindToPod(options.pods, identity, remoteAddress);
    return { key: keyOf(identity), token: token.raw, tokenExpiresAt: token.expiresAt * 1000, identity, client: unmapped(remoteAddress) ?? 'unknown' };
  };
  return (token, remoteAddress) => {
    const now = options.now();
    const verdict = verifier.cached(token, now);
    if (verdict instanceof Error) throw verdict;
    if (verdict !== undefined) return bound(token, verdict, remoteAddress);
    return verifier.verify(token, now).then((identity) => bound(token, identity, remoteAddress));
  };
}
