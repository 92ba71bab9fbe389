import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NodeCredentials } from '../upstream/node-credentials.ts';
import type { RequestHandler } from './credentials-handler.ts';
import { sendJson } from './responses.ts';

export interface ProbeOptions {
  /** The credential listeners actually bound. */
  readonly listeners: () => readonly AddressInfo[];
  readonly nodeCredentials: NodeCredentials;
  readonly timeoutMs?: number;
}

interface CheckResult {
  readonly ok: boolean;
  readonly error?: string;
}

/** `/healthz`: the process answers. `/readyz`: every listener answers and node credentials resolve. */
export function createProbeHandler(options: ProbeOptions): RequestHandler {
  const timeoutMs = options.timeoutMs ?? 900;
  return (req, res) => {
    const path = req.url?.split('?')[0];
    if (path === '/healthz') {
      sendJson(res, 200, JSON.stringify({ status: 'ok' }));
      return;
    }
    if (path !== '/readyz') {
      sendJson(res, 404, JSON.stringify({ Code: 'NotFound', Message: 'probes are /healthz and /readyz' }));
      return;
    }
    void readiness(options, timeoutMs).then((report) => sendJson(res, report.ready ? 200 : 503, JSON.stringify(report)));
  };
}

async function readiness(options: ProbeOptions, timeoutMs: number) {
  const listeners = options.listeners();
  const [credentials, ...listenerChecks] = await Promise.all([
    withTimeout(checkCredentials(options.nodeCredentials), timeoutMs),
    ...listeners.map((address) => withTimeout(checkListener(address), timeoutMs)),
  ]);
  const listenerReport = listeners.map((address, i) => ({ address: `${formatHost(address)}:${address.port}`, ...listenerChecks[i] }));
  const ready = listeners.length > 0 && credentials.ok && listenerChecks.every((check) => check.ok);
  return { ready, checks: { listeners: listenerReport, nodeCredentials: credentials } };
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
