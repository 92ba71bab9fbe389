import type { KubeConfig } from '@kubernetes/client-node';
import { KubernetesApiError, apiCall, describeApiFailure } from './api-request.ts';
import type { Logger } from 'pino';

/**
 * One try at removing the startup taint: done (`removed`, or `absent`: nothing to remove), or
 * retried (`conflict`: another writer changed the Node between read and write; `failed`: the API
 * server could not be reached, or refused).
 */
export type StartupTaintResult = 'removed' | 'absent' | 'conflict' | 'failed';
export type StartupTaintOutcome = Extract<StartupTaintResult, 'removed' | 'absent'>;

/** Told every result: the outcome once, and each try that is retried. */
export type StartupTaintObserver = (result: StartupTaintResult) => void;

export interface StartupTaintTiming {
  /** How often readiness is asked until it holds. Default 1 s. */
  readonly readyPollMs?: number;
  /** The delay after a first failure, doubling to 30 s, jittered. Default 1 s. */
  readonly retryBaseMs?: number;
}

export interface StartupTaintOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly key: string;
  /** Whether the agent is ready to serve this node's pods: the taint stays until it is. */
  readonly ready: () => Promise<boolean>;
  readonly logger: Logger;
  readonly observer?: StartupTaintObserver;
  readonly timing?: StartupTaintTiming | undefined;
}

export interface StartupTaintRemoval {
  /** The outcome; undefined when closed before there was one. Never rejects. */
  readonly done: Promise<StartupTaintOutcome | undefined>;
  /** Stops waiting and retrying; a request in flight is left to finish unheard. */
  close(): void;
}

const MAX_RETRY_MS = 30_000;
/** Conflicts are retried at once (the next read sees the other writer's change), up to this many in a row. */
const IMMEDIATE_CONFLICT_RETRIES = 5;
const FIELD_MANAGER = 'pod-identity-agent';

interface Failure {
  readonly result: 'conflict' | 'failed';
  readonly status: number | undefined;
  readonly message: string;
}

/**
 * Waits until `ready()` holds, then removes every taint with `key` (whatever its value and
 * effect) from this node and nothing else: read the Node, then a JSON patch that removes those
 * entries by index and carries the resourceVersion read, so the API server applies it only to the
 * version read (409 otherwise: read again and retry). Nothing but the removal is written, so no
 * other controller's taint, label or annotation can be lost. Failures are retried with backoff
 * for as long as the agent runs; serving never waits for any of it.
 */
export function removeStartupTaint(options: StartupTaintOptions): StartupTaintRemoval {
  const { nodeName, key, logger } = options;
  const readyPollMs = options.timing?.readyPollMs ?? 1000;
  const retryBaseMs = options.timing?.retryBaseMs ?? 1000;
  const log = logger.child({ node: nodeName, taint: key });
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
      timer.unref();
    });

  async function run(): Promise<StartupTaintOutcome | undefined> {
    const started = Date.now();
    let failures = 0;
    let conflicts = 0;
    let lastWarned: string | undefined;
    while (!closed) {
      if (!(await isReady(options.ready))) {
        await sleep(readyPollMs);
        continue;
      }
      if (closed) break;
      try {
        const { outcome, effects, nodeCreated } = await removeOnce(options.kubeConfig, nodeName, key);
        options.observer?.(outcome);
        const waitedMs = Date.now() - started;
        const nodeAgeSeconds = nodeCreated === undefined ? undefined : Math.round((Date.now() - nodeCreated.getTime()) / 1000);
        if (outcome === 'removed') log.info({ effects, waitedMs, nodeAgeSeconds }, 'startup taint removed: pods may now be scheduled on this node');
        else log.info({ waitedMs }, 'the startup taint is not on this node: nothing to remove');
        return outcome;
      } catch (error) {
        if (closed) break;
        const failure = describeFailure(error);
        options.observer?.(failure.result);
        if (failure.result === 'conflict' && conflicts < IMMEDIATE_CONFLICT_RETRIES) {
          conflicts += 1;
          log.debug('the node changed while the startup taint was being removed; reading it again');
          continue;
        }
        conflicts = 0;
        failures += 1;
        const delay = Math.min(MAX_RETRY_MS, retryBaseMs * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
        const details = { status: failure.status, error: failure.message, failures, retryInMs: Math.round(delay) };
        // Once per kind of failure at warn, so an outage of hours is one line, not thousands.
        if (failure.message !== lastWarned) log.warn({ ...details, hint: hintFor(failure.status) }, 'the startup taint could not be removed yet; retrying (pods still wait for this node)');
        else log.debug(details, 'the startup taint could not be removed yet; retrying');
        lastWarned = failure.message;
        await sleep(delay);
      }
    }
    return undefined;
  }

  const done = run().catch((error: unknown) => {
    log.error({ err: error }, 'removing the startup taint stopped on an unexpected error');
    return undefined;
  });
  return {
    done,
    close() {
      closed = true;
      clearTimeout(timer);
      wake?.();
    },
  };
}

async function isReady(ready: () => Promise<boolean>): Promise<boolean> {
  try {
    return await ready();
  } catch {
    return false;
  }
}

/** What is read of a Node. */
interface NodeObject {
  readonly metadata?: { readonly resourceVersion?: string; readonly creationTimestamp?: string };
  readonly spec?: { readonly taints?: readonly { readonly key?: string; readonly effect?: string }[] };
}

async function removeOnce(kubeConfig: KubeConfig, name: string, key: string): Promise<{ outcome: StartupTaintOutcome; effects: string[]; nodeCreated: Date | undefined }> {
  const path = `/api/v1/nodes/${encodeURIComponent(name)}`;
  const node = await apiCall<NodeObject>(kubeConfig, { path });
  const created = node.metadata?.creationTimestamp;
  const nodeCreated = created === undefined ? undefined : new Date(created);
  const taints = node.spec?.taints ?? [];
  const indices = taints.flatMap((taint, index) => (taint.key === key ? [index] : []));
  if (indices.length === 0) return { outcome: 'absent', effects: [], nodeCreated };
  const resourceVersion = node.metadata?.resourceVersion;
  if (resourceVersion === undefined || resourceVersion === '') throw new Error(`node ${name} was read without a resourceVersion`);
  // The resourceVersion makes the write conditional (409 when the Node changed since the read), so
  // the indices name the entries read. Highest first, so that each removal leaves the next in place.
  const patch = [
    { op: 'replace', path: '/metadata/resourceVersion', value: resourceVersion },
    ...[...indices].reverse().map((index) => ({ op: 'remove', path: `/spec/taints/${index}` })),
  ];
  await apiCall(kubeConfig, { method: 'PATCH', path, query: { fieldManager: FIELD_MANAGER }, body: patch, contentType: 'application/json-patch+json' });
  return { outcome: 'removed', effects: indices.map((index) => taints[index]?.effect ?? ''), nodeCreated };
}

function describeFailure(error: unknown): Failure {
  if (error instanceof KubernetesApiError) {
    return { result: error.status === 409 ? 'conflict' : 'failed', status: error.status, message: error.statusMessage ?? `HTTP ${error.status}` };
  }
  return { result: 'failed', status: undefined, message: describeApiFailure(error) };
}

function hintFor(status: number | undefined): string | undefined {
  if (status === 401) return 'the API server did not accept the agent\'s service-account token';
  if (status === 403) return 'the agent needs get and patch on nodes (daemonset/base/rbac.yaml), and the admission policy lets it remove only this taint from its own node';
  if (status === 404) return '--node-name (NODE_NAME) must be the name of the Node this agent runs on';
  return undefined;
}
