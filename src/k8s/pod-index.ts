import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { startInformer } from './informer.ts';

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
  /** Resolves once the first list has arrived (at once if it has); rejects when `signal` aborts first. */
  whenListed(signal: AbortSignal): Promise<void>;
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

/**
 * The pods scheduled on this node, from an informer (field selector spec.nodeName), restarted
 * after failures; the last known pods stay in place meanwhile.
 */
export function watchNodePods(options: PodIndexOptions): PodIndex {
  const fieldSelector = `spec.nodeName=${options.nodeName}`;
  const pods = new Map<string, PodInfo>();
  let synced = false;
  let markListed = (): void => undefined;
  const listed = new Promise<void>((resolve) => {
    markListed = resolve;
  });
  const informer = startInformer<V1Pod>({
    kubeConfig: options.kubeConfig,
    path: '/api/v1/pods',
    fieldSelector,
    onListed: () => {
      synced = true;
      markListed();
    },
    onUpsert: (pod) => {
      const info = toPodInfo(pod);
      if (info !== undefined) pods.set(info.uid, info);
    },
    onDelete: (pod) => {
      const uid = pod.metadata?.uid;
      if (uid === undefined) return;
      pods.delete(uid);
      options.onDelete(uid);
    },
    logger: options.logger,
    what: 'this node\'s pods',
    ...(options.retryBaseMs === undefined ? {} : { retryBaseMs: options.retryBaseMs }),
  });
  return {
    get synced() {
      return synced;
    },
    whenListed: (signal) => untilAborted(listed, signal),
    get: (uid) => pods.get(uid),
    close: () => informer.close(),
  };
}

function toPodInfo(pod: V1Pod): PodInfo | undefined {
  const { uid, namespace, name } = pod.metadata ?? {};
  if (uid === undefined || namespace === undefined || name === undefined) return undefined;
  const ips = (pod.status?.podIPs ?? []).map((entry) => entry.ip).filter((ip): ip is string => ip !== undefined);
  if (ips.length === 0 && pod.status?.podIP !== undefined) ips.push(pod.status.podIP);
  return { uid, namespace, name, serviceAccount: pod.spec?.serviceAccountName, hostNetwork: pod.spec?.hostNetwork === true, ips };
}

function untilAborted(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = () => reject(signal.reason);
    signal.addEventListener('abort', abort, { once: true });
    void promise.then(() => {
      signal.removeEventListener('abort', abort);
      resolve();
    });
  });
}
