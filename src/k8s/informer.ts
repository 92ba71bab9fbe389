import { type KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, Watch } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface InformerOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** The collection's path, e.g. `/api/v1/pods`. */
  readonly path: string;
  readonly fieldSelector?: string;
  /**
   * Lists the collection. ListWatch reports the listed objects as add events as soon as this
   * returns, before any other task runs, so an owner may mark itself synced in here.
   */
  readonly list: () => Promise<KubernetesListObject<T>>;
  readonly onUpsert: (object: T) => void;
  readonly onDelete: (object: T) => void;
  readonly logger: Logger;
  /** What is watched, for the log line when it fails: "this node's pods". */
  readonly what: string;
  readonly retryBaseMs?: number;
}

export interface Informer {
  /** Stops watching; the objects already reported stay with their owner. */
  close(): Promise<void>;
}

const MAX_RETRY_MS = 30_000;
/** A watch that ran this long before failing was healthy: its failure starts the backoff afresh. */
const HEALTHY_RUN_MS = 60_000;

/**
 * List, then watch with bookmarks. client-node's ListWatch stops for good on any error but 410,
 * so this restarts it with jittered exponential backoff; the owner keeps what it was told meanwhile.
 */
export function startInformer<T extends KubernetesObject>(options: InformerOptions<T>): Informer {
  let closed = false;
  let failures = 0;
  let startedAt = Date.now();
  let retry: NodeJS.Timeout | undefined;
  // ListWatch keeps the objects and reports only new versions: nothing is reported twice.
  const upsert = (object: T) => {
    if (!closed) options.onUpsert(object);
  };
  const remove = (object: T) => {
    if (!closed) options.onDelete(object);
  };
  const list = async () => {
    const listed = await options.list();
    // ListWatch cannot abort a list in flight: a close() meanwhile must not open the watch after it.
    if (closed) throw new Error('informer closed');
    return listed;
  };
  // Bookmarks keep the resource version fresh on a quiet collection; client-node does not ask for them itself.
  const informer = new ListWatch<T>(`${options.path}?allowWatchBookmarks=true`, new Watch(options.kubeConfig), list, false, undefined, options.fieldSelector);
  informer.on('add', upsert);
  informer.on('update', upsert);
  informer.on('delete', remove);
  informer.on('error', (error: unknown) => {
    if (closed) return;
    // A restart resumes the watch without listing again, so nothing else tells that it recovered.
    if (Date.now() - startedAt > HEALTHY_RUN_MS) failures = 0;
    failures += 1;
    const base = options.retryBaseMs ?? 1000;
    const delay = Math.min(MAX_RETRY_MS, base * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
    options.logger.warn({ error: (error as Error).message, retryInMs: Math.round(delay) }, `watching ${options.what} failed; keeping what was last seen`);
    retry = setTimeout(() => {
      startedAt = Date.now();
      void informer.start();
    }, delay);
    retry.unref();
  });
  void informer.start();
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      await informer.stop();
    },
  };
}
