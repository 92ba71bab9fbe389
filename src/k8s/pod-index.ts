import { CoreV1Api, type KubeConfig, ListWatch, type V1Pod, Watch } from '@kubernetes/client-node';
import type { Logger } from '../observability/logger.ts';

/** What pod binding needs to know of a pod on this node. */
export interface PodInfo {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string | undefined;
  readonly hostNetwork: boolean;
  readonly ips: readonly string[];
}

export interface PodIndex {
  /** True once the first list arrived; until then nothing can be refused for not being here. */
  readonly synced: boolean;
  get(uid: string): PodInfo | undefined;
  close(): Promise<void>;
}

export interface PodIndexOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly logger: Logger;
  /** Called when a pod leaves this node (deleted, or evicted and gone). */
  readonly onDelete: (uid: string) => void;
  readonly retryBaseMs?: number;
}

const MAX_RETRY_MS = 30_000;

/**
 * The pods scheduled on this node, from an informer (list, then watch with bookmarks, field
 * selector spec.nodeName). client-node's ListWatch stops for good on any error but 410, so this
 * restarts it with jittered backoff; the last known pods stay in place meanwhile.
 */
export function watchNodePods(options: PodIndexOptions): PodIndex {
  const fieldSelector = `spec.nodeName=${options.nodeName}`;
  const api = options.kubeConfig.makeApiClient(CoreV1Api);
  const pods = new Map<string, PodInfo>();
  let synced = false;
  let closed = false;
  let failures = 0;
  let retry: NodeJS.Timeout | undefined;
  const put = (pod: V1Pod) => {
    const info = toPodInfo(pod);
    if (info !== undefined) pods.set(info.uid, info);
  };
  const listFn = async () => {
    const list = await api.listPodForAllNamespaces({ fieldSelector });
    // Filled here rather than from the informer's add events, which follow only after this returns.
    for (const pod of list.items) put(pod);
    synced = true;
    failures = 0;
    return list;
  };
  // Bookmarks keep the resource version fresh on a quiet node; client-node does not ask for them itself.
  const informer = new ListWatch<V1Pod>('/api/v1/pods?allowWatchBookmarks=true', new Watch(options.kubeConfig), listFn, false, undefined, fieldSelector);
  informer.on('add', put);
  informer.on('update', put);
  informer.on('delete', (pod) => {
    const uid = pod.metadata?.uid;
    if (uid === undefined) return;
    pods.delete(uid);
    options.onDelete(uid);
  });
  informer.on('error', (error: unknown) => {
    if (closed) return;
    failures += 1;
    const base = options.retryBaseMs ?? 1000;
    const delay = Math.min(MAX_RETRY_MS, base * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
    options.logger.warn({ error: (error as Error).message, retryInMs: Math.round(delay) }, 'watching this node\'s pods failed; keeping the last known pods');
    retry = setTimeout(() => void informer.start(), delay);
    retry.unref();
  });
  void informer.start();
  return {
    get synced() {
      return synced;
    },
    get: (uid) => pods.get(uid),
    async close() {
      closed = true;
      clearTimeout(retry);
      await informer.stop();
    },
  };
}

function toPodInfo(pod: V1Pod): PodInfo | undefined {
  const { uid, namespace, name } = pod.metadata ?? {};
  if (uid === undefined || namespace === undefined || name === undefined) return undefined;
  const ips = (pod.status?.podIPs ?? []).map((entry) => entry.ip).filter((ip): ip is string => ip !== undefined);
  if (ips.length === 0 && pod.status?.podIP !== undefined) ips.push(pod.status.podIP);
  return { uid, namespace, name, serviceAccount: pod.spec?.serviceAccountName, hostNetwork: pod.spec?.hostNetwork === true, ips };
}
