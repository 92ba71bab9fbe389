import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CredentialCache, LookupOutcome } from '../cache/credential-cache.ts';
import { type AgentError, agentError, isAgentError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { AgentMetrics } from '../observability/metrics.ts';
import type { PodIdentity } from '../token/projected-token.ts';
import { createTokenChecker } from '../token/token-checker.ts';
import { createHostCheck } from './host-check.ts';
import { sendError, sendJson } from './responses.ts';

export const CREDENTIALS_PATH = '/v1/credentials';

export interface CredentialsHandlerOptions {
  readonly bindHosts: readonly string[];
  readonly port: number;
  readonly audience: string;
  readonly cache: CredentialCache;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  readonly now?: () => number;
}

/** What one request did, for its log line and metrics. Never holds the token or a credential. */
interface RequestRecord {
  status: number;
  outcome: LookupOutcome | 'rejected';
  identity: PodIdentity | undefined;
  error: AgentError | undefined;
  upstreamRequestId: string | undefined;
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** `GET /v1/credentials`: host, path, method and token checks, then the cache. */
export function createCredentialsHandler(options: CredentialsHandlerOptions): RequestHandler {
  const isBindHost = createHostCheck(options.bindHosts, options.port);
  const tokens = createTokenChecker({ audience: options.audience });
  const now = options.now ?? Date.now;

  async function answer(req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<void> {
    if (!isBindHost(req.headers.host)) throw agentError('ForbiddenHost', 'the Host header must name the agent\'s address');
    if (pathOf(req.url) !== CREDENTIALS_PATH) throw agentError('NotFound', `no such path; credentials are served at ${CREDENTIALS_PATH}`);
    if (req.method !== 'GET') throw agentError('MethodNotAllowed', `${CREDENTIALS_PATH} answers GET only`);
    const token = tokens.check(req.headers.authorization, now());
    record.identity = token.identity;
    const result = await options.cache.get(token);
    record.outcome = result.outcome;
    if (!result.ok) throw result.error;
    record.upstreamRequestId = result.entry.upstreamRequestId;
    record.status = 200;
    sendJson(res, 200, result.entry.body);
  }

  function fail(res: ServerResponse, record: RequestRecord, caught: unknown): void {
    const error = isAgentError(caught) ? caught : agentError('InternalError', 'the agent failed to answer', { cause: caught });
    record.status = error.status;
    record.error = error;
    record.upstreamRequestId ??= error.upstreamRequestId;
    sendError(res, error, error.code === 'MethodNotAllowed' ? { allow: 'GET' } : {});
  }

  return (req, res) => {
    const started = performance.now();
    const record: RequestRecord = { status: 0, outcome: 'rejected', identity: undefined, error: undefined, upstreamRequestId: undefined };
    answer(req, res, record)
      .catch((caught: unknown) => fail(res, record, caught))
      .finally(() => finish(options, record, performance.now() - started));
  };
}

function finish(options: CredentialsHandlerOptions, record: RequestRecord, durationMs: number): void {
  const { metrics, logger } = options;
  metrics.httpResponses.inc({ code: String(record.status) });
  if (record.outcome === 'hit' || record.outcome === 'stale') metrics.cacheState.inc({ state: 'hit' });
  else if (record.outcome === 'miss' || record.outcome === 'coalesced') metrics.cacheState.inc({ state: 'miss' });
  if (record.error !== undefined && record.outcome !== 'rejected') {
    metrics.cacheErrors.inc({ type: record.error.code, code: String(record.error.status) });
  }
  const fields = {
    namespace: record.identity?.namespace,
    serviceAccount: record.identity?.serviceAccount,
    pod: record.identity?.podName,
    status: record.status,
    cache: record.outcome,
    durationMs: Math.round(durationMs * 1000) / 1000,
    upstreamRequestId: record.upstreamRequestId,
    code: record.error?.code,
    message: record.error?.message,
  };
  if (record.status >= 500) logger.warn(fields, 'credential request failed');
  else logger.info(fields, 'credential request');
}

function pathOf(url: string | undefined): string {
  if (url === undefined) return '';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}
