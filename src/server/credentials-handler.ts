import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CacheRequest, CredentialCache, LookupOutcome } from '../cache/credential-cache.ts';
import type { CredentialEntry } from '../cache/credential-entry.ts';
import { agentError, isAgentError } from '../errors.ts';
import { type RequestRecord, type RequestRecorder, newRequestRecord } from '../observability/request-log.ts';
import type { ProjectedToken } from '../token/projected-token.ts';
import { createTokenChecker } from '../token/token-checker.ts';
import { type ResolveIdentity, resolveUnverified } from '../trust/request-identity.ts';
import { SELF_CHECK_HEADER, answerSelfCheck, sendError, sendPrepared } from '../wire.ts';
import { createHostCheck } from './host-check.ts';
import type { RequestHandler } from './http-server.ts';

export const CREDENTIALS_PATH = '/v1/credentials';

export interface CredentialsHandlerOptions {
  readonly bindHosts: readonly string[];
  readonly port: number;
  readonly audience: string;
  readonly cache: CredentialCache;
  /** The log line and metrics of each request (observability/request-log.ts). */
  readonly record: RequestRecorder;
  /** Verification and pod binding; without it, tokens are keyed by themselves. */
  readonly resolveIdentity?: ResolveIdentity;
  /** The key of this process's answers to /readyz's check of the pods' path (wire.ts); such checks are not pod requests and are not recorded. */
  readonly selfCheckId?: string;
  readonly now?: () => number;
}

/**
 * `GET /v1/credentials`: host, path, method and token checks, verification and pod binding when
 * configured, then the cache. A hit with a remembered verdict is answered synchronously from the
 * entry's prepared body and headers; only a miss or a first verification waits on a promise.
 */
export function createCredentialsHandler(options: CredentialsHandlerOptions): RequestHandler {
  const isBindHost = createHostCheck(options.bindHosts, options.port);
  const tokens = createTokenChecker({ audience: options.audience });
  const now = options.now ?? Date.now;
  const finish = options.record;
  const resolveIdentity = options.resolveIdentity ?? resolveUnverified;

  function admit(req: IncomingMessage, headers: CredentialHeaders, record: RequestRecord): ProjectedToken {
    if (headers.repeated) throw agentError('AmbiguousRequest', 'send exactly one Host and at most one Authorization header');
    if (!isBindHost(headers.host)) throw agentError('ForbiddenHost', 'the Host header must name the agent\'s address');
    if (pathOf(req.url) !== CREDENTIALS_PATH) throw agentError('NotFound', `no such path; credentials are served at ${CREDENTIALS_PATH}`);
    if (req.method !== 'GET') throw agentError('MethodNotAllowed', `${CREDENTIALS_PATH} answers GET only`);
    const token = tokens.check(headers.authorization, now());
    record.identity = token.identity;
    return token;
  }

  function respond(res: ServerResponse, record: RequestRecord, entry: CredentialEntry, outcome: LookupOutcome): void {
    record.status = 200;
    record.outcome = outcome;
    record.upstreamRequestId = entry.upstreamRequestId;
    sendPrepared(res, entry);
  }

  function fail(res: ServerResponse, record: RequestRecord, caught: unknown): void {
    const error = isAgentError(caught) ? caught : agentError('InternalError', 'the agent failed to answer', { cause: caught });
    record.status = error.status;
    record.error = error;
    record.upstreamRequestId ??= error.upstreamRequestId;
    sendError(res, error);
  }

  function handle(req: IncomingMessage, res: ServerResponse, headers: CredentialHeaders, record: RequestRecord): void {
    let request: CacheRequest | Promise<CacheRequest>;
    try {
      request = resolveIdentity(admit(req, headers, record), record.client);
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
  const { selfCheckId } = options;
  return (req, res) => {
    const headers = readHeaders(req.rawHeaders);
    if (headers.selfCheck !== undefined && selfCheckId !== undefined && answerSelfCheck(res, selfCheckId, headers.selfCheck)) return;
    const record = newRequestRecord();
    record.client = req.socket.remoteAddress;
    try {
      handle(req, res, headers, record);
    } catch (caught) {
      fail(res, record, caught);
      finish(record);
    }
  };
}

/** The three headers the handler reads, and whether Host or Authorization came more than once. */
interface CredentialHeaders {
  host: string | undefined;
  authorization: string | undefined;
  selfCheck: string | undefined;
  repeated: boolean;
}

/**
 * One pass over rawHeaders instead of req.headers, which Node builds on first read, every header
 * of the request lower-cased into a new object (about 0.8 µs a request in a bare server, measured). Node would keep the
 * first of repeated Host and Authorization headers; a request that repeats them is refused instead.
 */
function readHeaders(raw: readonly string[]): CredentialHeaders {
  const headers: CredentialHeaders = { host: undefined, authorization: undefined, selfCheck: undefined, repeated: false };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    // Lower-casing only the names of the right length keeps this allocation-free for the rest.
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (headers.host === undefined) headers.host = raw[i + 1];
      else headers.repeated = true;
    } else if (name.length === 13 && name.toLowerCase() === 'authorization') {
      if (headers.authorization === undefined) headers.authorization = raw[i + 1];
      else headers.repeated = true;
    } else if (name.length === SELF_CHECK_HEADER.length && name.toLowerCase() === SELF_CHECK_HEADER) headers.selfCheck ??= raw[i + 1];
  }
  return headers;
}

function pathOf(url: string | undefined): string {
  if (url === undefined) return '';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}
