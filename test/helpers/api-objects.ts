// The objects the fake apiserver serves, in the real apiserver's JSON shapes:
// pods, ConfigMaps and Nodes (as list/watch kinds), TokenReview status, and
// Status failures; and the patch formats a Node is written with. client-node
// parses these, so omitempty and naming must match.
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

export interface FakeTaint {
  key: string;
  value?: string;
  effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
  timeAdded?: string;
}

/**
 * A Node as stored: its JSON, less the resourceVersion, which the store hands out. Kept as JSON
 * (fields the fake does not know included) so that a write which drops or rewrites anything shows.
 */
export interface FakeNode {
  metadata: { name: string; uid: string; creationTimestamp?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [field: string]: unknown };
  spec: { taints?: FakeTaint[]; [field: string]: unknown };
  status?: Record<string, unknown>;
}

export const NODES: KindSpec<FakeNode> = {
  kind: 'Node',
  resource: 'nodes',
  clusterScoped: true,
  fields: new Set(['metadata.name', 'spec.unschedulable']),
  key: (node) => node.metadata.name,
  namespace: () => '',
  fieldValue: (node, field) => (field === 'metadata.name' ? node.metadata.name : String(node.spec.unschedulable === true)),
  serialize(node, rv) {
    const body = structuredClone(node) as unknown as Record<string, unknown> & FakeNode;
    body.metadata.resourceVersion = String(rv);
    return body;
  },
};

/** A failed write, with the status and reason the apiserver answers it with. */
export class ApiFailure extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

/**
 * A PATCH body applied to an object's JSON, by content type, as the apiserver does: RFC 6902 JSON
 * patch (add, remove, replace, test; a failed test or a missing path is 422), RFC 7386 merge patch,
 * and strategic merge patch taken as a merge patch (Node fields have no merge keys that matter here).
 */
export function applyPatch(contentType: string, target: unknown, body: string): unknown {
  let patch: unknown;
  try {
    patch = JSON.parse(body);
  } catch {
    throw new ApiFailure(400, 'BadRequest', 'the patch is not JSON');
  }
  const type = contentType.split(';')[0]?.trim();
  if (type === 'application/json-patch+json') return applyJsonPatch(target, patch);
  if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') return mergePatch(target, patch);
  throw new ApiFailure(415, 'UnsupportedMediaType', `the fake apiserver does not take ${contentType} patches`);
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function applyJsonPatch(target: unknown, patch: unknown): unknown {
  if (!Array.isArray(patch)) throw new ApiFailure(400, 'BadRequest', 'a JSON patch is an array of operations');
  const doc = { root: structuredClone(target) as Json };
  for (const operation of patch as { op?: unknown; path?: unknown; value?: Json }[]) {
    if (typeof operation.path !== 'string' || (operation.path !== '' && !operation.path.startsWith('/'))) throw new ApiFailure(400, 'BadRequest', `bad path in ${JSON.stringify(operation)}`);
    const tokens = operation.path === '' ? [] : operation.path.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = tokens.pop();
    let parent: Json = doc.root;
    for (const token of tokens) parent = child(parent, token, operation.path);
    if (last === undefined) throw new ApiFailure(422, 'Invalid', 'operations on the whole document are not supported');
    const exists = Array.isArray(parent) ? /^\d+$/.test(last) && Number(last) < parent.length : isObject(parent) && Object.hasOwn(parent, last);
    switch (operation.op) {
      case 'test':
        if (!exists || JSON.stringify(child(parent, last, operation.path)) !== JSON.stringify(operation.value)) throw new ApiFailure(422, 'Invalid', `the test of ${operation.path} failed`);
        break;
      case 'remove':
      case 'replace':
        if (!exists) throw new ApiFailure(422, 'Invalid', `${operation.op}: ${operation.path} does not exist`);
        if (Array.isArray(parent)) parent.splice(Number(last), 1, ...(operation.op === 'replace' ? [operation.value ?? null] : []));
        else if (operation.op === 'remove') delete (parent as Record<string, Json>)[last];
        else (parent as Record<string, Json>)[last] = operation.value ?? null;
        break;
      case 'add':
        if (Array.isArray(parent)) parent.splice(last === '-' ? parent.length : Number(last), 0, operation.value ?? null);
        else if (isObject(parent)) parent[last] = operation.value ?? null;
        else throw new ApiFailure(422, 'Invalid', `add: ${operation.path} has no parent`);
        break;
      default:
        throw new ApiFailure(400, 'BadRequest', `unsupported JSON patch operation ${JSON.stringify(operation.op)}`);
    }
  }
  return doc.root;
}

function child(parent: Json, token: string, path: string): Json {
  const value = Array.isArray(parent) ? parent[Number(token)] : isObject(parent) ? parent[token] : undefined;
  if (value === undefined) throw new ApiFailure(422, 'Invalid', `${path} does not exist`);
  return value;
}

function isObject(value: unknown): value is Record<string, Json> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return structuredClone(patch);
  const result: Record<string, Json> = isObject(target) ? structuredClone(target) : {};
  for (const [field, value] of Object.entries(patch)) {
    if (value === null) delete result[field];
    else result[field] = mergePatch(result[field], value) as Json;
  }
  return result;
}
