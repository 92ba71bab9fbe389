import { HttpMethod, type KubeConfig, RequestContext } from '@kubernetes/client-node';
import { type Dispatcher, getGlobalDispatcher } from 'undici';

/**
 * The API server's REST calls the agent makes (a list, a read, a JSON patch, a TokenReview, issuer
 * discovery) and its watches, authenticated by client-node's KubeConfig exactly as its generated
 * clients are. The
 * generated clients are not used: importing one evaluates all 757 models of the API (about 1 MB of
 * the bundle and 11 MB of idle RSS, bench/README.md) for the six calls made here.
 */

/** The API server answered, and not with 2xx. */
export class KubernetesApiError extends Error {
  override readonly name = 'KubernetesApiError';
  readonly status: number;
  /** The `message` of the API server's Status body, when it sent one. */
  readonly statusMessage: string | undefined;

  constructor(what: string, status: number, statusMessage: string | undefined) {
    super(`${what}: HTTP ${status}${statusMessage === undefined ? '' : `: ${statusMessage}`}`);
    this.status = status;
    this.statusMessage = statusMessage;
  }
}

export interface ApiCall {
  readonly method?: 'GET' | 'POST' | 'PATCH';
  /** From the server's root, e.g. `/api/v1/pods`. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string | undefined>>;
  /** Sent as JSON. */
  readonly body?: unknown;
  /** Default `application/json`; a JSON patch says `application/json-patch+json`. */
  readonly contentType?: string;
  /** Default `application/json`; the issuer's key set is `application/jwk-set+json`. */
  readonly accept?: string;
}

/** A call that hangs (an API server that accepted the connection and went quiet) ends after this. */
const CALL_TIMEOUT_MS = 10_000;

// client-node makes a new undici Agent for every call it authenticates, and with it a new connection
// (a TLS handshake to a real API server); the first one is kept and reused for all of a KubeConfig's calls.
const dispatchers = new WeakMap<KubeConfig, Dispatcher | null>();

interface Prepared {
  readonly url: URL;
  readonly method: 'GET' | 'POST' | 'PATCH';
  readonly headers: Record<string, string>;
  readonly dispatcher: Dispatcher;
}

async function prepare(kubeConfig: KubeConfig, call: ApiCall): Promise<Prepared> {
  const server = kubeConfig.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('the Kubernetes configuration has no current cluster');
  const url = new URL(server.replace(/\/+$/, '') + call.path);
  for (const [name, value] of Object.entries(call.query ?? {})) if (value !== undefined) url.searchParams.set(name, value);
  const method = call.method ?? 'GET';
  // Every call: a token read from a file or an exec plugin may have been renewed since the last.
  const context = new RequestContext(url.toString(), HttpMethod[method]);
  await kubeConfig.applySecurityAuthentication(context);
  if (!dispatchers.has(kubeConfig)) dispatchers.set(kubeConfig, context.getDispatcher() ?? null);
  const headers: Record<string, string> = { ...context.getHeaders(), accept: call.accept ?? 'application/json' };
  if (call.body !== undefined) headers['content-type'] = call.contentType ?? 'application/json';
  // Sent with the dispatcher's own request(): undici's top-level request() is in its index, which the
  // bundle leaves out (build.ts, undiciUsedParts).
  return { url, method, headers, dispatcher: dispatchers.get(kubeConfig) ?? getGlobalDispatcher() };
}

async function refusal(prepared: Prepared, call: ApiCall, statusCode: number, body: Dispatcher.ResponseData['body']): Promise<KubernetesApiError> {
  return new KubernetesApiError(`${prepared.method} ${call.path}`, statusCode, statusMessageOf(await body.text()));
}

/** Sends one call and parses the JSON answer; throws KubernetesApiError on a non-2xx status. */
export async function apiCall<T>(kubeConfig: KubeConfig, call: ApiCall): Promise<T> {
  const prepared = await prepare(kubeConfig, call);
  const response = await prepared.dispatcher.request({
    origin: prepared.url.origin,
    path: prepared.url.pathname + prepared.url.search,
    method: prepared.method,
    headers: prepared.headers,
    body: call.body === undefined ? null : JSON.stringify(call.body),
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  if (response.statusCode < 200 || response.statusCode > 299) throw await refusal(prepared, call, response.statusCode, response.body);
  return parseAnswer<T>(await response.body.text(), prepared, call);
}

/**
 * V8's JSON.parse error quotes the text around the fault, and a TokenReview's answer echoes the
 * token it reviewed: a malformed answer is reported without any of its text.
 */
function parseAnswer<T>(text: string, prepared: Prepared, call: ApiCall): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${prepared.method} ${call.path}: the API server's answer is not JSON`);
  }
}

/** A failed call or watch in one line for the log: the API server's refusal, or what undici says went wrong. */
export function describeApiFailure(error: unknown): string {
  if (error instanceof KubernetesApiError) return error.message;
  // An undici error whose own message says little ("fetch failed") names the refusal, reset or timeout in its cause.
  const { message, cause } = error as Error & { cause?: { code?: unknown; message?: unknown } };
  const detail = cause?.code ?? cause?.message;
  return typeof detail === 'string' ? `${message} (${detail})` : String(message);
}

/** One event of a watch stream, as the API server sends it. */
export interface WatchEvent<T> {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: T;
}

/**
 * Opens a watch (`call.query` has `watch=true`) on the same connection pool as the calls, and hands
 * over each event; resolves when the server ends the stream, rejects on a failure or after
 * `silenceMs` without a byte (a connection that died without a word).
 */
export async function apiWatch<T>(kubeConfig: KubeConfig, call: ApiCall, onEvent: (event: WatchEvent<T>) => void, options: { readonly signal: AbortSignal; readonly silenceMs: number }): Promise<void> {
  const prepared = await prepare(kubeConfig, call);
  const response = await prepared.dispatcher.request({
    origin: prepared.url.origin,
    path: prepared.url.pathname + prepared.url.search,
    method: 'GET',
    headers: prepared.headers,
    signal: options.signal,
    headersTimeout: CALL_TIMEOUT_MS,
    bodyTimeout: options.silenceMs,
  });
  if (response.statusCode !== 200) throw await refusal(prepared, call, response.statusCode, response.body);
  let pending = '';
  for await (const chunk of response.body.setEncoding('utf8') as AsyncIterable<string>) {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onEvent(parseAnswer<WatchEvent<T>>(line, prepared, call));
  }
}

function statusMessageOf(text: string): string | undefined {
  try {
    const message = (JSON.parse(text) as { message?: unknown } | null)?.message;
    return typeof message === 'string' ? message : undefined;
  } catch {
    return undefined;
  }
}
