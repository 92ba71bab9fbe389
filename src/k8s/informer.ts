import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { KubernetesApiError, type WatchEvent, apiCall, apiWatch, describeApiFailure } from './api-request.ts';

export interface InformerOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** The collection's path, e.g. `/api/v1/pods`. */
  readonly path: string;
  readonly fieldSelector?: string;
  /** After every list, once its objects are reported: what the collection held then. */
  readonly onListed?: (items: readonly T[]) => void;
  readonly onUpsert: (object: T) => void;
  readonly onDelete: (object: T) => void;
  readonly logger: Logger;
  /** What is watched, for the log line when it fails: "this node's pods". */
  readonly what: string;
  readonly retryBaseMs?: number;
  /** This long without a byte on a watch, its connection is taken for dead. Default 90 s. */
  readonly silenceMs?: number;
}

export interface Informer {
  /** Stops watching; the objects already reported stay with their owner. */
  close(): Promise<void>;
}

const MAX_RETRY_MS = 30_000;
/** A watch that ran this long before failing was healthy: its failure starts the backoff afresh. */
const HEALTHY_RUN_MS = 60_000;
/** The API server is asked to end each watch after this long (client-go's reflectors ask 5 to 10 minutes). */
const WATCH_SECONDS = 300;
/** The API server bookmarks a quiet watch about once a minute: this long without a byte, the connection is taken for dead. */
const WATCH_SILENCE_MS = 90_000;

/** The watch's resourceVersion is older than the server keeps: list again (HTTP 410, or an ERROR event with code 410). */
class Expired extends Error {}

/**
 * List, then watch from the list's resourceVersion with bookmarks; a watch that ends is resumed
 * from the last version seen, an expired one (410) lists again, and a failure is retried with
 * jittered exponential backoff while the owner keeps what it was told. Objects are known by uid,
 * and reported only when their resourceVersion changes; a list reports the deletion of every
 * known object it no longer holds, so nothing missed during a gap stays behind.
 */
export function startInformer<T extends KubernetesObject>(options: InformerOptions<T>): Informer {
  const known = new Map<string, T>();
  let resourceVersion: string | undefined;
  let closed = false;
  let watch: AbortController | undefined;
  let retry: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  const keyOf = (object: T) => object.metadata?.uid ?? `${object.metadata?.namespace}/${object.metadata?.name}`;
  const upsert = (object: T) => {
    const key = keyOf(object);
    const previous = known.get(key);
    if (previous !== undefined && previous.metadata?.resourceVersion === object.metadata?.resourceVersion) return;
    known.set(key, object);
    options.onUpsert(object);
  };
  const remove = (object: T) => {
    known.delete(keyOf(object));
    options.onDelete(object);
  };

  async function list(): Promise<void> {
    const listed = await apiCall<KubernetesListObject<T>>(options.kubeConfig, { path: options.path, query: { fieldSelector: options.fieldSelector } });
    // A close() meanwhile: the owner is told nothing more.
    if (closed) return;
    const present = new Set(listed.items.map(keyOf));
    for (const [key, object] of known) if (!present.has(key)) remove(object);
    for (const item of listed.items) upsert(item);
    resourceVersion = listed.metadata?.resourceVersion;
    options.onListed?.(listed.items);
  }

  /** Resolves when the server ends the watch; rejects on a failure, with Expired for a 410. */
  async function watchOnce(): Promise<void> {
    const query = { watch: 'true', allowWatchBookmarks: 'true', fieldSelector: options.fieldSelector, resourceVersion, timeoutSeconds: String(WATCH_SECONDS) };
    let status: { code?: unknown; message?: unknown } | undefined;
    const onEvent = ({ type, object }: WatchEvent<T>) => {
      if (closed) return;
      if (type === 'ERROR') {
        status = object as { code?: unknown; message?: unknown };
        return;
      }
      if (type === 'ADDED' || type === 'MODIFIED') upsert(object);
      else if (type === 'DELETED') remove(object);
      resourceVersion = object.metadata?.resourceVersion ?? resourceVersion;
    };
    watch = new AbortController();
    try {
      await apiWatch(options.kubeConfig, { path: options.path, query }, onEvent, { signal: watch.signal, silenceMs: options.silenceMs ?? WATCH_SILENCE_MS });
    } catch (error) {
      throw error instanceof KubernetesApiError && error.status === 410 ? new Expired('the watch\'s resourceVersion expired') : error;
    } finally {
      watch = undefined;
    }
    // The API server ends a watch it cannot continue with an ERROR event carrying a Status.
    if (status?.code === 410) throw new Expired('the watch\'s resourceVersion expired');
    if (status !== undefined) throw new Error(`the watch ended with an error: ${String(status.message ?? status.code)}`);
  }

  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      retry = { timer: setTimeout(resolve, ms), wake: resolve };
      retry.timer.unref();
    });
  }

  async function run(): Promise<void> {
    const base = options.retryBaseMs ?? 1000;
    let failures = 0;
    while (!closed) {
      const startedAt = Date.now();
      try {
        if (resourceVersion === undefined) await list();
        if (closed) return;
        await watchOnce();
        // A watch the server (or a proxy) ends at once would otherwise be reopened in a tight loop.
        if (Date.now() - startedAt < 1000) await pause(base);
      } catch (error) {
        if (closed) return;
        if (error instanceof Expired) {
          options.logger.debug({ what: options.what }, 'watch expired; listing again');
          resourceVersion = undefined;
          // A server that expires every fresh list's watch must not be listed in a tight loop.
          if (Date.now() - startedAt < 1000) await pause(base);
          continue;
        }
        if (Date.now() - startedAt > HEALTHY_RUN_MS) failures = 0;
        failures += 1;
        const delay = Math.min(MAX_RETRY_MS, base * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
        options.logger.warn({ error: describeApiFailure(error), retryInMs: Math.round(delay) }, `watching ${options.what} failed; keeping what was last seen`);
        await pause(delay);
      }
    }
  }

  run().catch((error: unknown) => options.logger.error({ err: error }, `watching ${options.what} stopped on an unexpected error`));
  return {
    // A list in flight is not waited for: what it returns is dropped.
    async close() {
      closed = true;
      watch?.abort();
      if (retry !== undefined) {
        clearTimeout(retry.timer);
        retry.wake();
      }
    },
  };
}
