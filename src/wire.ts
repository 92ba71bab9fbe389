import { createHmac } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { type AgentError, type AgentErrorCode, ERROR_CATALOG, agentError } from './errors.ts';

// Every answer a pod or a probe sees is written here: the credentials body, `{Code, Message}`
// errors (also the raw ones for requests Node could not parse) and JSON reports.

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;

/** Temporary credentials for a pod, as the upstream granted them. */
export interface PodCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string;
  /** Undefined when the upstream's role ARN did not name an account. */
  readonly accountId: string | undefined;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/**
 * A success answer, serialised once when the credentials arrive and written as is for every hit. The
 * body is a string, not a Buffer: Node then writes headers and body in one `write` instead of a
 * `writev` of two chunks, which measured as the largest single cost of a hit.
 */
export interface PreparedAnswer {
  readonly body: string;
  /** Flat, as `writeHead` takes them. */
  readonly headers: readonly string[];
}

/** The body every SDK accepts: four strings, and `Expiration` in RFC 3339 UTC ending in "Z". */
export function prepareCredentials(credentials: PodCredentials): PreparedAnswer {
  const body = JSON.stringify({
    AccessKeyId: credentials.accessKeyId,
    SecretAccessKey: credentials.secretAccessKey,
    Token: credentials.sessionToken,
    AccountId: credentials.accountId,
    // toISOString() gives RFC 3339 UTC with "Z", the one form every SDK accepts (JS refuses +00:00).
    Expiration: new Date(credentials.expiresAt).toISOString(),
  });
  return { body, headers: ['content-type', 'application/json', 'cache-control', 'no-store', 'content-length', String(Buffer.byteLength(body))] };
}

export function sendPrepared(res: ServerResponse, answer: PreparedAnswer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(200, answer.headers as string[]);
  res.end(answer.body);
}

/** A JSON body; nothing between agent and pod may cache it. */
export function sendJson(res: ServerResponse, status: number, body: Buffer | string, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  try {
    res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(body), ...extraHeaders });
    res.end(body);
  } catch {
    // Nothing sensible can be written on this socket any more; dropping it is the safe answer.
    res.destroy();
  }
}

/** A JSON report (probes); `undefined` fields are left out as JSON.stringify does. */
export function sendReport(res: ServerResponse, status: number, report: object): void {
  sendJson(res, status, JSON.stringify(report));
}

/** `{"Code","Message"}`: the JS SDK reads Code and Message, Go reads them case-insensitively. */
export function sendError(res: ServerResponse, error: AgentError): void {
  const headers: Record<string, string> = {};
  if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
  if (error.code === 'MethodNotAllowed') headers.allow = 'GET';
  sendJson(res, error.status, errorBody(error), headers);
}

/**
 * The header of /readyz's check of the pods' own path (port 80, through the node's redirect): it
 * carries a fresh nonce, and the agent answers with an HMAC of it under a key random per process.
 * Whatever else holds the address (a hostPort workload, a proxy) sees the nonce but cannot make the
 * answer, not even by echoing the header back; so an answer that verifies came from this agent.
 */
export const SELF_CHECK_HEADER = 'x-pod-identity-agent-self-check';

/** Nonces longer than this are not answered: the check's own are 22 characters. */
const MAX_NONCE_LENGTH = 64;

export function selfCheckAnswer(key: string, nonce: string): string {
  return createHmac('sha256', key).update(nonce).digest('base64url');
}

/** Answers a self-check, or returns false when the request carries none. */
export function answerSelfCheck(res: ServerResponse, key: string, nonce: string | string[] | undefined): boolean {
  if (typeof nonce !== 'string' || nonce.length > MAX_NONCE_LENGTH) return false;
  res.writeHead(204, { [SELF_CHECK_HEADER]: selfCheckAnswer(key, nonce), 'cache-control': 'no-store' });
  res.end();
  return true;
}

/** 404 for a path a side server does not serve. */
export function sendNotFound(res: ServerResponse, message: string): void {
  sendError(res, agentError('NotFound', message));
}

function errorBody(error: AgentError): string {
  return JSON.stringify(error.toJSON());
}

const REASONS: Readonly<Record<number, string>> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

/**
 * A whole HTTP/1.1 answer, for a socket Node's parser gave up on (no ServerResponse exists):
 * the same `{Code, Message}` and status as the catalog gives every other refusal, then close.
 */
export function rawErrorResponse(code: AgentErrorCode, message: string): string {
  const { status } = ERROR_CATALOG[code];
  const body = errorBody(agentError(code, message));
  return `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
