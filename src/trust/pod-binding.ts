import { isIP } from 'node:net';
import { agentError } from '../errors.ts';
import type { PodIndex } from '../k8s/pod-index.ts';
import type { VerifiedIdentity } from '../token/identity.ts';

/**
 * A verified token is believed only for a live pod on this node and, off the host network, only
 * from that pod's own address: a token copied out of a pod and replayed elsewhere is refused.
 */
export function bindToPod(pods: PodIndex, identity: VerifiedIdentity, remoteAddress: string | undefined): void {
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
export function unmapped(address: string | undefined): string | undefined {
  // Every request passes here: the common case, no prefix, without isIP's regular expression.
  if (address === undefined || !address.startsWith('::ffff:')) return address;
  const v4 = address.slice(7);
  return isIP(v4) === 4 ? v4 : address;
}
