import { isIP } from 'node:net';
import type { CacheRequest } from '../cache/credential-cache.ts';
import { agentError } from '../errors.ts';
import type { PodIndex } from '../k8s/pod-index.ts';
import { type ProjectedToken, tokenKey } from '../token/projected-token.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { TokenVerifier } from './verifier.ts';

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

/**
 * An unverified token is keyed by itself. A verified one is bound to a live pod on this node (and,
 * off the host network, to that pod's address) and keyed by the pod's identity, so that the
 * kubelet's token rotation finds the same credentials. Synchronous when the verdict is remembered.
 */
export function createIdentityResolver(options: RequestIdentityOptions): ResolveIdentity {
  const { verifier } = options;
  if (verifier === undefined) return (token, remoteAddress) => ({ key: token.key, token: token.raw, tokenExpiresAt: token.expiresAt * 1000, identity: undefined, client: unmapped(remoteAddress) ?? 'unknown' });

  const bound = (token: ProjectedToken, identity: VerifiedIdentity, remoteAddress: string | undefined): CacheRequest => {
    if (options.pods !== undefined) bindToPod(options.pods, identity, remoteAddress);
    const key = tokenKey(['pod', options.clusterName, identity.namespace, identity.serviceAccount, identity.podUid].join('\0'));
    return { key, token: token.raw, tokenExpiresAt: token.expiresAt * 1000, identity, client: unmapped(remoteAddress) ?? 'unknown' };
  };
  return (token, remoteAddress) => {
    const now = options.now();
    const verdict = verifier.cached(token, now);
    if (verdict instanceof Error) throw verdict;
    if (verdict !== undefined) return bound(token, verdict, remoteAddress);
    return verifier.verify(token, now).then((identity) => bound(token, identity, remoteAddress));
  };
}

function bindToPod(pods: PodIndex, identity: VerifiedIdentity, remoteAddress: string | undefined): void {
  if (!pods.synced) throw agentError('PodListUnavailable', 'this node\'s pods have not been listed yet; try again shortly');
  const pod = pods.get(identity.podUid);
  if (pod === undefined || pod.namespace !== identity.namespace || pod.name !== identity.podName) {
    throw agentError('PodNotOnNode', `pod ${identity.namespace}/${identity.podName} is not running on this node`);
  }
  // A host-network pod shares the node's addresses: nothing to compare.
  if (pod.hostNetwork) return;
  const source = unmapped(remoteAddress);
  if (source === undefined || !pod.ips.includes(source)) {
    throw agentError('SourceAddressMismatch', `the request does not come from pod ${identity.namespace}/${identity.podName}'s address`);
  }
}

/** "::ffff:169.254.1.2" as the plain IPv4 address a pod's status lists. */
function unmapped(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return isIP(v4) === 4 ? v4 : address;
}
