// A plain-HTTP stand-in for the Kubernetes API server, covering exactly the
// calls the agent makes: OIDC discovery + JWKS, pod list/watch filtered by
// field selector, and TokenReview. No cluster runs in CI, so tests drive the
// real @kubernetes/client-node against this instead of mocking the client.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakePod {
  namespace: string;
  name: string;
  uid: string;
  nodeName: string;
  podIP?: string;
  hostNetwork?: boolean;
  serviceAccountName?: string;
}

export type TokenVerdict =
  | { authenticated: false; error?: string }
  | {
      authenticated: true;
      namespace: string;
      serviceAccount: string;
      podName: string;
      podUid: string;
      audiences: string[];
      nodeName?: string;
    };

export type ReviewTokenFn = (token: string, audiences: string[]) => TokenVerdict | Promise<TokenVerdict>;

/** 'destroy' drops the TCP connection (network outage); '503' answers like an overloaded/restarting apiserver. */
export type DownMode = 'destroy' | '503';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** false when the bearer token was missing/wrong (answered 401). */
  authenticated: boolean;
}

export interface FakeApiServer {
  readonly url: string;
  readonly token: string;
  writeKubeconfig(path: string): Promise<void>;
  setJwks(jwks: { keys: object[] }): void;
  addPod(pod: FakePod): void;
  updatePod(pod: FakePod): void;
  deletePod(uid: string): void;
  /** Going down cuts every open watch; `mode` overrides options.downMode. */
  setDown(down: boolean, mode?: DownMode): void;
  readonly requests: readonly RecordedRequest[];
  /** Contains bearer tokens: assert on it, never log it. */
  readonly tokenReviews: readonly { token: string; audiences: string[] }[];
  /** Number of watch streams currently open. */
  readonly openWatches: number;
  /** Latest resourceVersion handed out. */
  readonly resourceVersion: string;
  close(): Promise<void>;
}

export interface FakeApiServerOptions {
  issuer: string;
  jwks: { keys: object[] };
  reviewToken?: ReviewTokenFn;
  /** BOOKMARK period for watches that asked for bookmarks; 0 disables. Default 1000. */
  bookmarkIntervalMs?: number;
  /** How setDown(true) fails requests. Default 'destroy'. */
  downMode?: DownMode;
}

// One term of a field selector, e.g. spec.nodeName=node-a or metadata.namespace!=kube-system.
interface FieldTerm {
  field: string;
  value: string;
  negate: boolean;
}

interface PodRecord {
  pod: FakePod;
  rv: number;
}

// A change as seen by the store; each watch classifies it against its own selector.
interface ChangeEvent {
  rv: number;
  before: PodRecord | undefined;
  after: PodRecord | undefined;
}

interface OpenWatch {
  res: ServerResponse;
  namespace: string | undefined;
  selector: FieldTerm[];
  bookmarks: boolean;
}

type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const SUPPORTED_FIELDS = new Set(['spec.nodeName', 'metadata.name', 'metadata.namespace', 'status.podIP', 'spec.serviceAccountName']);

export async function startFakeApiServer(options: FakeApiServerOptions): Promise<FakeApiServer> {
  const fake = new FakeApiServerImpl(options);
  await fake.listen();
  return fake;
}

/** Parses `a=b,c!=d` the way the apiserver does for the fields it supports; throws on anything else. */
function parseFieldSelector(raw: string | undefined): FieldTerm[] {
  if (raw === undefined || raw === '') return [];
  return raw.split(',').map((part) => {
    const match = /^([^=!]+)(==|!=|=)(.*)$/.exec(part.trim());
    if (!match) throw new Error(`invalid field selector term ${JSON.stringify(part)}`);
    const [, field = '', op, value = ''] = match;
    if (!SUPPORTED_FIELDS.has(field)) throw new Error(`field label not supported: ${field}`);
    return { field, value, negate: op === '!=' };
  });
}

function fieldValue(pod: FakePod, field: string): string {
  switch (field) {
    case 'spec.nodeName':
      return pod.nodeName;
    case 'metadata.name':
      return pod.name;
    case 'metadata.namespace':
      return pod.namespace;
    case 'status.podIP':
      return pod.podIP ?? '';
    default:
      return pod.serviceAccountName ?? 'default';
  }
}

function matches(pod: FakePod, namespace: string | undefined, selector: readonly FieldTerm[]): boolean {
  if (namespace !== undefined && pod.namespace !== namespace) return false;
  return selector.every((t) => (fieldValue(pod, t.field) === t.value) !== t.negate);
}

/** Real V1Pod JSON shape (omitempty semantics for optional fields). */
function serializePod(record: PodRecord, withTypeMeta: boolean): Record<string, unknown> {
  const { pod, rv } = record;
  const spec: Record<string, unknown> = {
    nodeName: pod.nodeName,
    serviceAccountName: pod.serviceAccountName ?? 'default',
    containers: [],
  };
  if (pod.hostNetwork) spec.hostNetwork = true;
  const status: Record<string, unknown> = { phase: 'Running' };
  if (pod.podIP !== undefined) {
    status.podIP = pod.podIP;
    status.podIPs = [{ ip: pod.podIP }];
  }
  const body = { metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, resourceVersion: String(rv) }, spec, status };
  return withTypeMeta ? { kind: 'Pod', apiVersion: 'v1', ...body } : body;
}

/**
 * What a watcher with this selector sees for a change: a pod moving into the
 * selector is ADDED, out of it DELETED (as the real apiserver's filtered watch does).
 */
function classify(w: Pick<OpenWatch, 'namespace' | 'selector'>, ev: ChangeEvent): WatchEventType | undefined {
  const was = ev.before !== undefined && matches(ev.before.pod, w.namespace, w.selector);
  const is = ev.after !== undefined && matches(ev.after.pod, w.namespace, w.selector);
  if (!was && is) return 'ADDED';
  if (was && is) return 'MODIFIED';
  if (was && !is) return 'DELETED';
  return undefined;
}

function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function sendJson(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

// Pod list/watch paths: /api/v1/pods and /api/v1/namespaces/{ns}/pods.
const PODS_PATH = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?pods$/;

class FakeApiServerImpl implements FakeApiServer {
  readonly token = `fake-apiserver-${randomBytes(16).toString('hex')}`;
  readonly requests: RecordedRequest[] = [];
  readonly tokenReviews: { token: string; audiences: string[] }[] = [];
  #url = '';
  #options: FakeApiServerOptions;
  #jwks: { keys: object[] };
  #pods = new Map<string, PodRecord>();
  #log: ChangeEvent[] = [];
  #rv = 1;
  #watches = new Set<OpenWatch>();
  #down: DownMode | undefined;
  #server = createServer((req, res) => void this.#handle(req, res));
  #bookmarkTimer: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: FakeApiServerOptions) {
    this.#options = options;
    this.#jwks = options.jwks;
  }

  get url(): string {
    return this.#url;
  }

  get openWatches(): number {
    return this.#watches.size;
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.#server.address() as AddressInfo;
    this.#url = `http://127.0.0.1:${port}`;
    const interval = this.#options.bookmarkIntervalMs ?? 1000;
    if (interval > 0) {
      this.#bookmarkTimer = setInterval(() => this.#sendBookmarks(), interval);
      // A forgotten close() must not keep the test process alive.
      this.#bookmarkTimer.unref();
    }
  }

  async writeKubeconfig(path: string): Promise<void> {
    // JSON is valid YAML, so KubeConfig.loadFromFile reads it. client-node 2.x
    // refuses http:// servers unless insecure-skip-tls-verify is set.
    const kubeconfig = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: this.#url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake-user', user: { token: this.token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake-user' } }],
      'current-context': 'fake',
    };
    await writeFile(path, JSON.stringify(kubeconfig, null, 2), { mode: 0o600 });
  }

  setJwks(jwks: { keys: object[] }): void {
    this.#jwks = jwks;
  }

  addPod(pod: FakePod): void {
    if (this.#pods.has(pod.uid)) throw new Error(`pod uid ${pod.uid} already exists`);
    this.#change(undefined, { ...pod });
  }

  updatePod(pod: FakePod): void {
    const before = this.#pods.get(pod.uid);
    if (!before) throw new Error(`pod uid ${pod.uid} does not exist`);
    this.#change(before, { ...pod });
  }

  deletePod(uid: string): void {
    const before = this.#pods.get(uid);
    if (!before) throw new Error(`pod uid ${uid} does not exist`);
    this.#change(before, undefined);
  }

  setDown(down: boolean, mode?: DownMode): void {
    if (!down) {
      this.#down = undefined;
      return;
    }
    this.#down = mode ?? this.#options.downMode ?? 'destroy';
    // An outage kills streams mid-flight; clients see a broken body, not a clean end.
    for (const w of this.#watches) w.res.destroy();
    this.#watches.clear();
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    for (const w of this.#watches) w.res.end();
    this.#watches.clear();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Keep-alive sockets from client dispatchers would otherwise hold close() open.
    this.#server.closeAllConnections();
    await closed;
  }

  // Every mutation gets the next resourceVersion, is logged for watch replay,
  // and is pushed to the open watches it concerns.
  #change(before: PodRecord | undefined, pod: FakePod | undefined): void {
    const rv = ++this.#rv;
    const after = pod ? { pod, rv } : undefined;
    if (after) this.#pods.set(after.pod.uid, after);
    else if (before) this.#pods.delete(before.pod.uid);
    const ev: ChangeEvent = { rv, before, after };
    this.#log.push(ev);
    for (const w of this.#watches) this.#deliver(w, ev);
  }

  #deliver(w: OpenWatch, ev: ChangeEvent): void {
    const type = classify(w, ev);
    // The object is the pod's state as of this change (for DELETED: its final state).
    const pod = ev.after?.pod ?? ev.before?.pod;
    if (type === undefined || pod === undefined) return;
    w.res.write(`${JSON.stringify({ type, object: serializePod({ pod, rv: ev.rv }, true) })}\n`);
  }

  #sendBookmarks(): void {
    const object = { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(this.#rv) } };
    const line = `${JSON.stringify({ type: 'BOOKMARK', object })}\n`;
    for (const w of this.#watches) if (w.bookmarks) w.res.write(line);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const authenticated = req.headers.authorization === `Bearer ${this.token}`;
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query, authenticated });
    if (this.#down === 'destroy') {
      req.socket.destroy();
      return;
    }
    if (this.#down === '503') {
      sendJson(res, 503, statusBody(503, 'ServiceUnavailable', 'the server is currently unable to handle the request'));
      return;
    }
    if (!authenticated) {
      sendJson(res, 401, statusBody(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    try {
      await this.#route(req, res, url, query);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, statusBody(500, 'InternalError', (err as Error).message));
      else res.destroy();
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, url: URL, query: Record<string, string>): Promise<void> {
    const method = req.method ?? 'GET';
    if (method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      sendJson(res, 200, this.#discovery());
      return;
    }
    if (method === 'GET' && url.pathname === '/openid/v1/jwks') {
      // The real apiserver serves this media type; clients must treat it as JSON.
      sendJson(res, 200, this.#jwks, 'application/jwk-set+json');
      return;
    }
    if (method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
      await this.#tokenReview(req, res);
      return;
    }
    const pods = PODS_PATH.exec(url.pathname);
    if (method === 'GET' && pods) {
      this.#podsEndpoint(res, pods[1] === undefined ? undefined : decodeURIComponent(pods[1]), query);
      return;
    }
    sendJson(res, 404, statusBody(404, 'NotFound', `the fake apiserver does not serve ${method} ${url.pathname}`));
  }

  #discovery(): Record<string, unknown> {
    return {
      issuer: this.#options.issuer,
      jwks_uri: `${this.#url}/openid/v1/jwks`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
    };
  }

  #podsEndpoint(res: ServerResponse, namespace: string | undefined, query: Record<string, string>): void {
    let selector: FieldTerm[];
    try {
      selector = parseFieldSelector(query.fieldSelector);
      // Fake pods carry no labels; silently matching nothing would hide test mistakes.
      if (query.labelSelector) throw new Error('labelSelector is not supported by the fake apiserver');
    } catch (err) {
      sendJson(res, 400, statusBody(400, 'BadRequest', (err as Error).message));
      return;
    }
    if (query.watch === 'true' || query.watch === '1') {
      this.#openWatch(res, { res, namespace, selector, bookmarks: query.allowWatchBookmarks === 'true' }, query);
      return;
    }
    const items = [...this.#pods.values()].filter((r) => matches(r.pod, namespace, selector)).map((r) => serializePod(r, false));
    sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.#rv) }, items });
  }

  #openWatch(res: ServerResponse, w: OpenWatch, query: Record<string, string>): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Clients await response headers before consuming the stream.
    res.flushHeaders();
    this.#watches.add(w);
    res.on('close', () => this.#watches.delete(w));
    const since = Number(query.resourceVersion ?? '0');
    if (!since) {
      // No resourceVersion: like the apiserver, start with synthetic ADDED events for current state.
      for (const r of this.#pods.values()) this.#deliver(w, { rv: r.rv, before: undefined, after: r });
    } else {
      // Replay what happened after the client's list so nothing is lost between list and watch.
      for (const ev of this.#log) if (ev.rv > since) this.#deliver(w, ev);
    }
    const timeout = Number(query.timeoutSeconds ?? '0');
    if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref();
  }

  async #tokenReview(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let spec: { token?: unknown; audiences?: unknown };
    try {
      spec = (JSON.parse(await readBody(req)) as { spec?: typeof spec }).spec ?? {};
    } catch {
      sendJson(res, 400, statusBody(400, 'BadRequest', 'TokenReview body is not JSON'));
      return;
    }
    const token = typeof spec.token === 'string' ? spec.token : '';
    const audiences = Array.isArray(spec.audiences) ? spec.audiences.map(String) : [];
    this.tokenReviews.push({ token, audiences });
    const review = this.#options.reviewToken ?? (() => ({ authenticated: false, error: 'no reviewToken configured' }) as const);
    const verdict = await review(token, audiences);
    sendJson(res, 201, {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec,
      status: tokenReviewStatus(verdict),
    });
  }
}

/** Mirrors the apiserver's JSON: `authenticated` is omitted (omitempty) when false. */
function tokenReviewStatus(verdict: TokenVerdict): Record<string, unknown> {
  if (!verdict.authenticated) {
    return { user: {}, ...(verdict.error ? { error: verdict.error } : {}) };
  }
  const extra: Record<string, string[]> = {
    'authentication.kubernetes.io/pod-name': [verdict.podName],
    'authentication.kubernetes.io/pod-uid': [verdict.podUid],
  };
  if (verdict.nodeName !== undefined) extra['authentication.kubernetes.io/node-name'] = [verdict.nodeName];
  return {
    authenticated: true,
    user: {
      username: `system:serviceaccount:${verdict.namespace}:${verdict.serviceAccount}`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${verdict.namespace}`, 'system:authenticated'],
      extra,
    },
    audiences: verdict.audiences,
  };
}
