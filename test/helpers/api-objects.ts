// The objects the fake apiserver serves, in the real apiserver's JSON shapes:
// pods and ConfigMaps (as list/watch kinds), TokenReview status, and Status
// failures. client-node parses these, so omitempty and naming must match.
import type { KindSpec } from './list-watch.ts';

export interface FakePod {
  namespace: string;
  name: string;
  uid: string;
  nodeName: string;
  podIP?: string;
  hostNetwork?: boolean;
  serviceAccountName?: string;
}

export interface FakeConfigMap {
  namespace: string;
  name: string;
  uid: string;
  data: Record<string, string>;
}

export type TokenVerdict =
  | { authenticated: false; error?: string }
  | {
      authenticated: true;
      namespace: string;
      serviceAccount: string;
      podName: string;
      podUid: string;
      audiences: string[];
      nodeName?: string;
    };

export const PODS: KindSpec<FakePod> = {
  kind: 'Pod',
  resource: 'pods',
  fields: new Set(['spec.nodeName', 'metadata.name', 'metadata.namespace', 'status.podIP', 'spec.serviceAccountName']),
  key: (pod) => pod.uid,
  namespace: (pod) => pod.namespace,
  fieldValue(pod, field) {
    switch (field) {
      case 'spec.nodeName':
        return pod.nodeName;
      case 'metadata.name':
        return pod.name;
      case 'metadata.namespace':
        return pod.namespace;
      case 'status.podIP':
        return pod.podIP ?? '';
      default:
        return pod.serviceAccountName ?? 'default';
    }
  },
  serialize: serializePod,
};

export const CONFIG_MAPS: KindSpec<FakeConfigMap> = {
  kind: 'ConfigMap',
  resource: 'configmaps',
  // All the apiserver supports for ConfigMaps.
  fields: new Set(['metadata.name', 'metadata.namespace']),
  key: (cm) => configMapKey(cm.namespace, cm.name),
  namespace: (cm) => cm.namespace,
  fieldValue: (cm, field) => (field === 'metadata.name' ? cm.name : cm.namespace),
  serialize(cm, rv) {
    const body: Record<string, unknown> = { metadata: { name: cm.name, namespace: cm.namespace, uid: cm.uid, resourceVersion: String(rv) } };
    // omitempty, as the apiserver: a ConfigMap without data has no `data` field.
    if (Object.keys(cm.data).length > 0) body.data = { ...cm.data };
    return body;
  },
};

export function configMapKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Real V1Pod JSON shape (omitempty semantics for optional fields). */
function serializePod(pod: FakePod, rv: number): Record<string, unknown> {
  const spec: Record<string, unknown> = {
    nodeName: pod.nodeName,
    serviceAccountName: pod.serviceAccountName ?? 'default',
    containers: [],
  };
  if (pod.hostNetwork) spec.hostNetwork = true;
  const status: Record<string, unknown> = { phase: 'Running' };
  if (pod.podIP !== undefined) {
    status.podIP = pod.podIP;
    status.podIPs = [{ ip: pod.podIP }];
  }
  return { metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, resourceVersion: String(rv) }, spec, status };
}

/** Mirrors the apiserver's JSON: `authenticated` is omitted (omitempty) when false. */
export function tokenReviewStatus(verdict: TokenVerdict): Record<string, unknown> {
  if (!verdict.authenticated) {
    return { user: {}, ...(verdict.error ? { error: verdict.error } : {}) };
  }
  const extra: Record<string, string[]> = {
    'authentication.kubernetes.io/pod-name': [verdict.podName],
    'authentication.kubernetes.io/pod-uid': [verdict.podUid],
  };
  if (verdict.nodeName !== undefined) extra['authentication.kubernetes.io/node-name'] = [verdict.nodeName];
  return {
    authenticated: true,
    user: {
      username: `system:serviceaccount:${verdict.namespace}:${verdict.serviceAccount}`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${verdict.namespace}`, 'system:authenticated'],
      extra,
    },
    audiences: verdict.audiences,
  };
}

export function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}
