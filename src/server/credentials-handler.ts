import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CacheRequest, CredentialCache, LookupOutcome } from '../cache/credential-cache.ts';
import type { CredentialEntry } from '../cache/credential-entry.ts';
import { type AgentError, agentError, isAgentError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { AgentMetrics } from '../observability/metrics.ts';
import type { PodIdentity } from '../token/identity.ts';
import type { ProjectedToken } from '../token/projected-token.ts';
import { createTokenChecker } from '../token/token-checker.ts';
import { createHostCheck } from './host-check.ts';
import { type ResolveIdentity, createIdentityResolver } from '../trust/request-identity.ts';
import { sendError } from '../wire.ts';

export const CREDENTIALS_PATH = '/v1/credentials';

export interface CredentialsHandlerOptions {
  readonly bindHosts: readonly string[];
  readonly port: number;
  readonly audience: string;
  readonly cache: CredentialCache;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** Verification and pod binding; without it, tokens are keyed by themselves. */
  readonly resolveIdentity?: ResolveIdentity;
  readonly now?: () => number;
}

/** What one request did, for its log line and metrics. Never holds the token or a credential. */
interface RequestRecord {
  readonly started: number;
  status: number;
  outcome: LookupOutcome | 'rejected';
  identity: PodIdentity | undefined;
  error: AgentError | undefined;
  upstreamRequestId: string | undefined;
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * `GET /v1/credentials`: host, path, method and token checks, verification and pod binding when
 * configured, then the cache. A hit with a remembered verdict is answered synchronously from the
 * entry's prepared body and headers; only a miss or a first verification waits on a promise.
 */
export function createCredentialsHandler(options: CredentialsHandlerOptions): RequestHandler {
  const isBindHost = createHostCheck(options.bindHosts, options.port);
  const tokens = createTokenChecker({ audience: options.audience });
  const now = options.now ?? Date.now;
  const finish = createFinisher(options);
  const resolveIdentity = options.resolveIdentity ?? createIdentityResolver({ clusterName: '', verifier: undefined, pods: undefined, now });

  function admit(req: IncomingMessage, record: RequestRecord): ProjectedToken {
    if (hasDuplicateCredentialHeaders(req.rawHeaders)) throw agentError('AmbiguousRequest', 'send exactly one Host and at most one Authorization header');
    if (!isBindHost(req.headers.host)) throw agentError('ForbiddenHost', 'the Host header must name the agent\'s address');
    if (pathOf(req.url) !== CREDENTIALS_PATH) throw agentError('NotFound', `no such path; credentials are served at ${CREDENTIALS_PATH}`);
    if (req.method !== 'GET') throw agentError('MethodNotAllowed', `${CREDENTIALS_PATH} answers GET only`);
    const token = tokens.check(req.headers.authorization, now());
    record.identity = token.identity;
    return token;
  }

  function respond(res: ServerResponse, record: RequestRecord, entry: CredentialEntry, outcome: LookupOutcome): void {
    record.status = 200;
    record.outcome = outcome;
    record.upstreamRequestId = entry.upstreamRequestId;
    if (res.headersSent || res.destroyed) return;
    res.writeHead(200, entry.headers as string[]);
    res.end(entry.body);
  }

  function fail(res: ServerResponse, record: RequestRecord, caught: unknown): void {
    const error = isAgentError(caught) ? caught : agentError('InternalError', 'the agent failed to answer', { cause: caught });
    record.status = error.status;
    record.error = error;
    record.upstreamRequestId ??= error.upstreamRequestId;
    sendError(res, error, error.code === 'MethodNotAllowed' ? { allow: 'GET' } : {});
  }

  function handle(req: IncomingMessage, res: ServerResponse, record: RequestRecord): void {
    let request: CacheRequest | Promise<CacheRequest>;
    try {
      request = resolveIdentity(admit(req, record), req.socket.remoteAddress);
    } catch (caught) {
      fail(res, record, caught);
      finish(record);
      return;
    }
    const entry = request instanceof Promise ? undefined : options.cache.hit(request);
    if (entry !== undefined) {
      respond(res, record, entry, 'hit');
      finish(record);
      return;
    }
    Promise.resolve(request)
      .then((resolved) => options.cache.get(resolved))
      .then(
        (result) => {
          if (result.ok) return respond(res, record, result.entry, result.outcome);
          record.outcome = result.outcome;
          return fail(res, record, result.error);
        },
        (caught: unknown) => fail(res, record, caught),
      )
      .catch((caught: unknown) => fail(res, record, caught))
      .finally(() => finish(record));
  }

  // Whatever goes wrong inside one request ends as that request's 500, never as the process's crash.
  return (req, res) => {
    const record: RequestRecord = { started: performance.now(), status: 0, outcome: 'rejected', identity: undefined, error: undefined, upstreamRequestId: undefined };
    try {
      handle(req, res, record);
    } catch (caught) {
      fail(res, record, caught);
      finish(record);
    }
  };
}

/** Metrics and the one log line per request; metric children are bound once per label value. */
function createFinisher(options: CredentialsHandlerOptions): (record: RequestRecord) => void {
  const { metrics, logger } = options;
  const responses = new Map<number, { inc(): void }>();
  const durations = new Map<string, { observe(seconds: number): void }>();
  const hit = metrics.cacheState.labels('hit');
  const miss = metrics.cacheState.labels('miss');

  function record(request: RequestRecord, seconds: number): void {
    let byStatus = responses.get(request.status);
    if (byStatus === undefined) responses.set(request.status, (byStatus = metrics.httpResponses.labels(String(request.status))));
    byStatus.inc();
    const outcome = request.status === 200 ? request.outcome : 'error';
    let byOutcome = durations.get(outcome);
    if (byOutcome === undefined) durations.set(outcome, (byOutcome = metrics.requestDuration.labels(outcome)));
    byOutcome.observe(seconds);
    if (request.outcome === 'hit' || request.outcome === 'stale') hit.inc();
    else if (request.outcome === 'miss' || request.outcome === 'coalesced') miss.inc();
    if (request.error !== undefined && request.outcome !== 'rejected') {
      metrics.cacheErrors.inc({ type: request.error.code, code: String(request.error.status) });
    }
  }

  function log(request: RequestRecord, seconds: number): void {
    const fields = {
      namespace: request.identity?.namespace,
      serviceAccount: request.identity?.serviceAccount,
      pod: request.identity?.podName,
      status: request.status,
      cache: request.outcome,
      durationMs: Math.round(seconds * 1e6) / 1000,
      upstreamRequestId: request.upstreamRequestId,
      code: request.error?.code,
      message: request.error?.message,
      detail: request.error?.detail,
    };
    // A bug is worth its stack trace; the pod got a bare InternalError.
    if (request.error?.code === 'InternalError') logger.error({ ...fields, err: request.error.cause }, 'credential request failed inside the agent');
    else if (request.status >= 500) logger.warn(fields, 'credential request failed');
    else logger.info(fields, 'credential request');
  }

  return (request) => {
    const seconds = (performance.now() - request.started) / 1000;
    try {
      record(request, seconds);
      log(request, seconds);
    } catch (error) {
      // Bookkeeping must not fail the request, nor escape as an unhandled rejection.
      logger.error({ err: error }, 'recording a credential request failed');
    }
  };
}

/** Node keeps the first of repeated Host and Authorization headers; a request that repeats them is refused instead. */
function hasDuplicateCredentialHeaders(raw: readonly string[]): boolean {
  let hosts = 0;
  let authorizations = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (name === 'host') hosts += 1;
    else if (name === 'authorization') authorizations += 1;
  }
  return hosts > 1 || authorizations > 1;
}

function pathOf(url: string | undefined): string {
  if (url === undefined) return '';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}
