import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EventLoopMonitor } from '../observability/event-loop.ts';
import type { NodeCredentials } from '../upstream/node-credentials.ts';
import { sendNotFound, sendReport } from '../wire.ts';
import type { RequestHandler } from './http-server.ts';

export interface ProbeOptions {
  /** The credential listeners actually bound. */
  readonly listeners: () => readonly AddressInfo[];
  readonly nodeCredentials: NodeCredentials;
  readonly eventLoop: EventLoopMonitor;
  /** True once shutdown began: not ready, whatever else holds. */
  readonly draining: () => boolean;
  /** --upstream sts: whether every associations source has been read; absent otherwise. */
  readonly associationsLoaded?: () => boolean;
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
 * `/healthz`: the event loop answers promptly. `/readyz`: every listener answers, node credentials
 * resolve, and (STS upstream) the associations have been read.
 */
export function createProbeHandler(options: ProbeOptions): RequestHandler {
  const timeoutMs = options.timeoutMs ?? 800;
  return (req, res) => {
    const path = req.url?.split('?')[0];
    if (path === '/healthz') {
      const delay = options.eventLoop.sample();
      const healthy = delay.p99Ms < UNRESPONSIVE_DELAY_MS;
      sendReport(res, healthy ? 200 : 503, { status: healthy ? 'ok' : 'unresponsive', eventLoopDelayMs: delay });
      return;
    }
    if (path !== '/readyz') {
      sendNotFound(res, 'probes are /healthz and /readyz');
      return;
    }
    void readiness(options, timeoutMs).then((report) => sendReport(res, report.ready ? 200 : 503, report));
  };
}

async function readiness(options: ProbeOptions, timeoutMs: number) {
  const listeners = options.listeners();
  const [credentials, ...listenerChecks] = await Promise.all([
    withTimeout(checkCredentials(options.nodeCredentials), timeoutMs),
    ...listeners.map((address) => withTimeout(checkListener(address), timeoutMs)),
  ]);
  const listenerReport = listeners.map((address, i) => ({ address: `${formatHost(address)}:${address.port}`, ...listenerChecks[i] }));
  const draining = options.draining();
  const associations = options.associationsLoaded === undefined ? undefined : options.associationsLoaded() ? { ok: true } : { ok: false, error: 'not every associations source has been read yet' };
  const ready = !draining && listeners.length > 0 && credentials.ok && listenerChecks.every((check) => check.ok) && associations?.ok !== false;
  return { ready, draining, checks: { listeners: listenerReport, nodeCredentials: credentials, ...(associations === undefined ? {} : { associations }) } };
}

async function checkCredentials(nodeCredentials: NodeCredentials): Promise<CheckResult> {
  try {
    await nodeCredentials();
    return { ok: true };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/** A direct request to the listener, never through a proxy from the environment (agent: false). */
function checkListener(address: AddressInfo): Promise<CheckResult> {
  return new Promise((resolve) => {
    const req = request({ host: address.address, port: address.port, path: '/', method: 'GET', agent: false, headers: { host: formatHost(address) } }, (res) => {
      res.resume();
      // The credentials server answers 404 to "/": that proves the whole handler runs.
      resolve(res.statusCode === 404 ? { ok: true } : { ok: false, error: `answered ${res.statusCode} to GET /` });
    });
    req.on('error', (error) => resolve({ ok: false, error: error.message }));
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
