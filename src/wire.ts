import type { ServerResponse } from 'node:http';
import type { AgentError } from './errors.ts';

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;

/** A prepared JSON body; credentials are never cached by anything between agent and pod. */
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

/** `{"Code","Message"}`: the JS SDK reads Code and Message, Go reads them case-insensitively. */
export function sendError(res: ServerResponse, error: AgentError, extraHeaders: Record<string, string> = {}): void {
  const retryAfter: Record<string, string> = error.retryAfterSeconds === undefined ? {} : { 'retry-after': String(error.retryAfterSeconds) };
  sendJson(res, error.status, JSON.stringify(error.toJSON()), { ...retryAfter, ...extraHeaders });
}
