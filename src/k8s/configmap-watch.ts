import type { KubeConfig, V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { type Informer, startInformer } from './informer.ts';

export interface ConfigMapRef {
  readonly namespace: string;
  readonly name: string;
}

export interface ConfigMapWatchOptions {
  readonly kubeConfig: KubeConfig;
  readonly configMap: ConfigMapRef;
  readonly logger: Logger;
  /** The ConfigMap's data after every list and change; undefined while it does not exist. */
  readonly onData: (data: Readonly<Record<string, string>> | undefined) => void;
  readonly retryBaseMs?: number;
}

/** One ConfigMap, watched through the API server (needs get/list/watch on configmaps in its namespace). */
export function watchConfigMap(options: ConfigMapWatchOptions): Informer {
  const { namespace, name } = options.configMap;
  const fieldSelector = `metadata.name=${name}`;
  return startInformer<V1ConfigMap>({
    kubeConfig: options.kubeConfig,
    path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`,
    fieldSelector,
    onListed: (items) => {
      if (items.length === 0) options.onData(undefined);
    },
    onUpsert: (configMap) => options.onData(configMap.data ?? {}),
    onDelete: () => options.onData(undefined),
    logger: options.logger,
    what: `ConfigMap ${namespace}/${name}`,
    ...(options.retryBaseMs === undefined ? {} : { retryBaseMs: options.retryBaseMs }),
  });
}
