import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EventLoopMonitor } from '../observability/event-loop.ts';
import type { NodeCredentials } from '../upstream/node-credentials.ts';
import { SELF_CHECK_HEADER, selfCheckAnswer, sendNotFound, sendReport } from '../wire.ts';
import type { RequestHandler } from './http-server.ts';

export interface ProbeOptions {
  /** The credential listeners actually bound. */
  readonly listeners: () => readonly AddressInfo[];
  /** The port pods connect to (--pod-port); undefined: each listener's own. */
  readonly podPort: number | undefined;
  /** What the credentials handler answers a self-check with (see wire.ts). */
  readonly selfCheckId: string;
  /** Told the outcome of each path check, for the endpoint metric. */
  readonly onPathChecked?: (address: string, ok: boolean) => void;
  readonly nodeCredentials: NodeCredentials;
  /** Why the upstream refuses the node's credentials (upstream/node-credentials.ts), if it does. */
  readonly nodeCredentialsRejection?: () => string | undefined;
  readonly eventLoop: EventLoopMonitor;
  /** True once shutdown began: not ready, whatever else holds. */
  readonly draining: () => boolean;
  /** --upstream sts: whether every associations source has been read; absent otherwise. */
  readonly associationsLoaded?: () => boolean;
  /** With pod binding on, whether this node's pods have been listed; undefined when pods are not bound. */
  readonly podsListed?: () => boolean | undefined;
  /** Each check's own limit, so that both probes answer within 1 s. */
  readonly timeoutMs?: number;
}

interface CheckResult {
  readonly ok: boolean;
  readonly error?: string;
}

/** An SDK gives up after 1 s: an event loop that lags that much fails every pod that asks. */
export const UNRESPONSIVE_DELAY_MS = 1000;

/**
 * `/healthz`: the event loop answers promptly. `/readyz`: each bind host answers on the port pods
 * use, through whatever the node does to get there, and it is this agent that answers; node
 * credentials resolve; (STS upstream) the associations have been read; and (pod binding) this node's
 * pods have been listed.
 */
export function createProbeHandler(options: ProbeOptions): RequestHandler {
  const timeoutMs = options.timeoutMs ?? 800;
  return (req, res) => {
    const path = req.url?.split('?')[0];
    if (path === '/healthz') {
      const report = health(options.eventLoop);
      sendReport(res, report.healthy ? 200 : 503, { status: report.status, eventLoopDelayMs: report.eventLoopDelayMs });
      return;
    }
    if (path !== '/readyz') {
      sendNotFound(res, 'probes are /healthz and /readyz');
      return;
    }
    readiness(options, timeoutMs).then(
      (report) => sendReport(res, report.ready ? 200 : 503, report),
      (error: unknown) => sendReport(res, 503, { ready: false, error: `readiness could not be checked: ${(error as Error).message}` }),
    );
  };
}

export interface HealthReport {
  readonly healthy: boolean;
  readonly status: 'ok' | 'unresponsive';
  readonly eventLoopDelayMs: ReturnType<EventLoopMonitor['sample']>;
}

/** What `/healthz` answers: the event loop's p99 delay since the last sample. */
export function health(eventLoop: EventLoopMonitor): HealthReport {
  const delay = eventLoop.sample();
  const healthy = delay.p99Ms < UNRESPONSIVE_DELAY_MS;
  return { healthy, status: healthy ? 'ok' : 'unresponsive', eventLoopDelayMs: delay };
}

export interface ReadinessReport {
  readonly ready: boolean;
  readonly draining: boolean;
  readonly checks: Record<string, unknown>;
}

/** What `/readyz` answers, for the probe file and the startup taint too. */
export async function readiness(options: ProbeOptions, timeoutMs = options.timeoutMs ?? 800): Promise<ReadinessReport> {
  const listeners = options.listeners();
  const [credentials, ...listenerChecks] = await Promise.all([
    withTimeout(checkCredentials(options), timeoutMs),
    ...listeners.map((address) => withTimeout(checkPodPath(address, options), timeoutMs)),
  ]);
  const listenerReport = listeners.map((address, i) => {
    const where = `${formatHost(address)}:${options.podPort ?? address.port}`;
    options.onPathChecked?.(where, listenerChecks[i]?.ok === true);
    return { address: where, ...(options.podPort === undefined ? {} : { listener: `${formatHost(address)}:${address.port}` }), ...listenerChecks[i] };
  });
  const draining = options.draining();
  const associations = options.associationsLoaded === undefined ? undefined : options.associationsLoaded() ? { ok: true } : { ok: false, error: 'not every associations source has been read yet' };
  // Why nothing is bound yet: the credential listeners wait for the first list, which is never undone.
  const listed = options.podsListed?.();
  const pods = listed === undefined ? undefined : listed ? { ok: true } : { ok: false, error: 'this node\'s pods have not been listed yet' };
  const ready = !draining && listeners.length > 0 && credentials.ok && listenerChecks.every((check) => check.ok) && associations?.ok !== false;
  return { ready, draining, checks: { listeners: listenerReport, nodeCredentials: credentials, ...(associations === undefined ? {} : { associations }), ...(pods === undefined ? {} : { pods }) } };
}

/** The node's credentials resolve, and the upstream has not refused them since it last took them. */
async function checkCredentials(options: ProbeOptions): Promise<CheckResult> {
  try {
    await options.nodeCredentials();
    // Read after resolving: credentials refreshed by this very call end a refusal.
    const rejection = options.nodeCredentialsRejection?.();
    return rejection === undefined ? { ok: true } : { ok: false, error: rejection };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/**
 * During a surge rollout two agents share the port and the kernel spreads new connections over
 * both: an answer from another agent (it echoes no value, or its own) is tried again on a new
 * connection, so a sibling is not taken for a hijack. Both agents on one path: 8 misses in a row
 * happen once in 256 checks; a real impostor answers all 8, each a loopback round trip.
 */
const PATH_ATTEMPTS = 8;

async function checkPodPath(address: AddressInfo, options: ProbeOptions): Promise<CheckResult> {
  let result: CheckResult & { answered?: boolean } = { ok: false };
  for (let attempt = 0; attempt < PATH_ATTEMPTS; attempt++) {
    result = await checkPodPathOnce(address, options);
    if (result.ok || result.answered !== true) break;
  }
  return result.error === undefined ? { ok: result.ok } : { ok: result.ok, error: result.error };
}

/**
 * A request where a pod sends one (the bind host, on the pod port), never through a proxy from the
 * environment (agent: false). Only this agent echoes the self-check value: anything else that
 * answers there (a hostPort workload, a rule that won over the redirect) is a hijacked path.
 */
function checkPodPathOnce(address: AddressInfo, options: ProbeOptions): Promise<CheckResult & { answered?: boolean }> {
  const port = options.podPort ?? address.port;
  const where = `${formatHost(address)}:${port}`;
  return new Promise((resolve) => {
    const nonce = randomBytes(16).toString('base64url');
    const headers = { host: formatHost(address), [SELF_CHECK_HEADER]: nonce };
    const req = request({ host: address.address, port, path: '/', method: 'GET', agent: false, headers }, (res) => {
      res.resume();
      if (res.headers[SELF_CHECK_HEADER] === selfCheckAnswer(options.selfCheckId, nonce)) resolve({ ok: true });
      else resolve({ ok: false, answered: true, error: `${where} is answered by something other than this agent (HTTP ${res.statusCode})` });
    });
    req.on('error', (error) => {
      const hint = port === address.port ? '' : `: is the node's redirect to port ${address.port} in place?`;
      resolve({ ok: false, error: `nothing of this agent answers on ${where} (${(error as NodeJS.ErrnoException).code ?? error.message})${hint}` });
    });
    req.end();
  });
}

function withTimeout(check: Promise<CheckResult>, ms: number): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, error: `no answer within ${ms} ms` }), ms);
  });
  return Promise.race([check, timeout]).finally(() => clearTimeout(timer));
}

function formatHost(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]` : address.address;
}
