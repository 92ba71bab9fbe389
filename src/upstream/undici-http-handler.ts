import type { HttpHandlerOptions, HttpRequest, HttpResponse, RequestHandler } from '@smithy/types';
import type { Dispatcher } from 'undici';
import { readBoundedBody } from './bounded-body.ts';

/**
 * Lets an AWS SDK client send through the agent's own undici pool: the same keep-alive
 * connections, proxy settings (HTTPS_PROXY/NO_PROXY, which the SDK's default handler ignores)
 * and attempt timing (an interceptor on the pool) as the EKS Auth client. The body is read here, bounded and within the
 * attempt's signal, and handed to the SDK whole.
 */
export class UndiciHttpHandler implements RequestHandler<HttpRequest, HttpResponse, HttpHandlerOptions> {
  readonly #dispatcher: Dispatcher;
  readonly #service: string;

  constructor(dispatcher: Dispatcher, service: string) {
    this.#dispatcher = dispatcher;
    this.#service = service;
  }

  async handle(request: HttpRequest, options: HttpHandlerOptions = {}): Promise<{ response: HttpResponse }> {
    const port = request.port === undefined ? '' : `:${request.port}`;
    const query = buildQuery(request.query ?? {});
    const signal = options.abortSignal as AbortSignal | undefined;
    const response = await this.#dispatcher.request({
      origin: `${request.protocol}//${request.hostname}${port}`,
      method: request.method as Dispatcher.HttpMethod,
      path: query === '' ? request.path : `${request.path}?${query}`,
      headers: request.headers,
      body: request.body as string | Uint8Array | undefined,
      signal,
    });
    const body = await readBoundedBody(response.body, signal, this.#service);
    return { response: { statusCode: response.statusCode, headers: flatHeaders(response.headers), body } };
  }

  // The SDK may ask a handler for its settings; this one has none it lets the SDK change.
  updateHttpClientConfig(): void {}

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }
}

/** RFC 3986 encoding as SigV4 signs it (encodeURIComponent leaves !'()* alone; SigV4 does not). */
function buildQuery(query: NonNullable<HttpRequest['query']>): string {
  const parts: string[] = [];
  for (const key of Object.keys(query).sort()) {
    const value = query[key];
    const values = value === null || value === undefined ? [undefined] : Array.isArray(value) ? value : [value];
    for (const item of values) parts.push(item === undefined ? escape(key) : `${escape(key)}=${escape(item)}`);
  }
  return parts.join('&');
}

function escape(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function flatHeaders(headers: Dispatcher.ResponseData['headers']): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  return flat;
}
