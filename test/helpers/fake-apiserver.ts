// A plain-HTTP stand-in for the Kubernetes API server, covering exactly the
// calls the agent makes: OIDC discovery + JWKS, pod and ConfigMap list/watch
// filtered by field selector, and TokenReview. No cluster runs in CI, so tests
// drive the real @kubernetes/client-node against this instead of mocking it.
import { randomBytes, randomUUID } from 'node:crypto';
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
  /** Creates (ADDED) or replaces the data of (MODIFIED) a ConfigMap; its uid stays the same until it is deleted. */
  setConfigMap(namespace: string, name: string, data: Record<string, string>): void;
  /** Deletes a ConfigMap (DELETED); throws when it does not exist. */
  deleteConfigMap(namespace: string, name: string): void;
  /** Going down cuts every open watch; `mode` overrides options.downMode. */
  setDown(down: boolean, mode?: DownMode): void;
  readonly requests: readonly RecordedRequest[];
  /** Contains bearer tokens: assert on it, never log it. */
  readonly tokenReviews: readonly { token: string; audiences: string[] }[];
  /** Number of watch streams currently open, of every kind. */
  readonly openWatches: number;
  /** Latest resourceVersion handed out (one counter for every kind, like etcd's revision). */
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

interface FakeConfigMap {
  namespace: string;
  name: string;
  uid: string;
  data: Record<string, string>;
}

// One term of a field selector, e.g. spec.nodeName=node-a or metadata.namespace!=kube-system.
interface FieldTerm {
  field: string;
  value: string;
  negate: boolean;
}

/** What the generic store needs to know about one kind of object. */
interface KindSpec<T> {
  /** `kind` of the objects, e.g. 'Pod'; the list is `${kind}List`. */
  readonly kind: string;
  /** Collection name in the path: /api/v1/{resource} and /api/v1/namespaces/{ns}/{resource}. */
  readonly resource: string;
  /** Field selector labels the apiserver supports for this kind; anything else is refused. */
  readonly fields: ReadonlySet<string>;
  key(obj: T): string;
  namespace(obj: T): string;
  fieldValue(obj: T, field: string): string;
  /** The object's JSON as of resourceVersion rv, without kind/apiVersion (list items carry none). */
  serialize(obj: T, rv: number): Record<string, unknown>;
}

interface StoredRecord<T> {
  obj: T;
  rv: number;
}

// A change as seen by the store; each watch classifies it against its own selector.
interface ChangeEvent<T> {
  rv: number;
  before: StoredRecord<T> | undefined;
  after: StoredRecord<T> | undefined;
}

interface OpenWatch {
  res: ServerResponse;
  namespace: string | undefined;
  selector: FieldTerm[];
  bookmarks: boolean;
}

type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const PODS: KindSpec<FakePod> = {
  kind: 'Pod',
  resource: 'pods',
  fields: new Set(['spec.nodeName', 'metadata.name', 'metadata.namespace', 'status.podIP', 'spec.serviceAccountName']),
  key: (pod) => pod.uid,
  namespace: (pod) => pod.namespace,
  fieldValue(pod, field) {
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
  },
  serialize: serializePod,
};

const CONFIG_MAPS: KindSpec<FakeConfigMap> = {
  kind: 'ConfigMap',
  resource: 'configmaps',
  // All the apiserver supports for ConfigMaps.
  fields: new Set(['metadata.name', 'metadata.namespace']),
  key: (cm) => configMapKey(cm.namespace, cm.name),
  namespace: (cm) => cm.namespace,
  fieldValue: (cm, field) => (field === 'metadata.name' ? cm.name : cm.namespace),
  serialize(cm, rv) {
    const body: Record<string, unknown> = { metadata: { name: cm.name, namespace: cm.namespace, uid: cm.uid, resourceVersion: String(rv) } };
    // omitempty, as the apiserver: a ConfigMap without data has no `data` field.
    if (Object.keys(cm.data).length > 0) body.data = { ...cm.data };
    return body;
  },
};

function configMapKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export async function startFakeApiServer(options: FakeApiServerOptions): Promise<FakeApiServer> {
  const fake = new FakeApiServerImpl(options);
  await fake.listen();
  return fake;
}

/** Parses `a=b,c!=d` the way the apiserver does for the fields it supports; throws on anything else. */
function parseFieldSelector(raw: string | undefined, supported: ReadonlySet<string>): FieldTerm[] {
  if (raw === undefined || raw === '') return [];
  return raw.split(',').map((part) => {
    const match = /^([^=!]+)(==|!=|=)(.*)$/.exec(part.trim());
    if (!match) throw new Error(`invalid field selector term ${JSON.stringify(part)}`);
    const [, field = '', op, value = ''] = match;
    if (!supported.has(field)) throw new Error(`field label not supported: ${field}`);
    return { field, value, negate: op === '!=' };
  });
}

/** Real V1Pod JSON shape (omitempty semantics for optional fields). */
function serializePod(pod: FakePod, rv: number): Record<string, unknown> {
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
  return { metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, resourceVersion: String(rv) }, spec, status };
}

/**
 * One kind's objects, change log and open watches, and its list/watch endpoint.
 * resourceVersions come from the server, which shares one counter between kinds.
 */
class Collection<T> {
  readonly spec: KindSpec<T>;
  readonly watches = new Set<OpenWatch>();
  readonly #records = new Map<string, StoredRecord<T>>();
  readonly #log: ChangeEvent<T>[] = [];
  readonly #path: RegExp;

  constructor(spec: KindSpec<T>) {
    this.spec = spec;
    this.#path = new RegExp(`^/api/v1/(?:namespaces/([^/]+)/)?${spec.resource}$`);
  }

  get(key: string): T | undefined {
    return this.#records.get(key)?.obj;
  }

  /** The namespace part of a path this collection serves (undefined: all namespaces), or null when it does not serve it. */
  matchPath(pathname: string): { namespace: string | undefined } | null {
    const m = this.#path.exec(pathname);
    if (!m) return null;
    return { namespace: m[1] === undefined ? undefined : decodeURIComponent(m[1]) };
  }

  // Every mutation is logged for watch replay and pushed to the open watches it concerns.
  change(rv: number, key: string, obj: T | undefined): void {
    const before = this.#records.get(key);
    const after = obj === undefined ? undefined : { obj, rv };
    if (after) this.#records.set(key, after);
    else this.#records.delete(key);
    const ev: ChangeEvent<T> = { rv, before, after };
    this.#log.push(ev);
    for (const w of this.watches) this.#deliver(w, ev);
  }

  serve(res: ServerResponse, namespace: string | undefined, query: Record<string, string>, currentRv: number): void {
    let selector: FieldTerm[];
    try {
      selector = parseFieldSelector(query.fieldSelector, this.spec.fields);
      // Fake objects carry no labels; silently matching nothing would hide test mistakes.
      if (query.labelSelector) throw new Error('labelSelector is not supported by the fake apiserver');
    } catch (err) {
      sendJson(res, 400, statusBody(400, 'BadRequest', (err as Error).message));
      return;
    }
    if (query.watch === 'true' || query.watch === '1') {
      this.#openWatch(res, { res, namespace, selector, bookmarks: query.allowWatchBookmarks === 'true' }, query);
      return;
    }
    const items = [...this.#records.values()].filter((r) => this.#matches(r.obj, namespace, selector)).map((r) => this.spec.serialize(r.obj, r.rv));
    sendJson(res, 200, { kind: `${this.spec.kind}List`, apiVersion: 'v1', metadata: { resourceVersion: String(currentRv) }, items });
  }

  sendBookmarks(currentRv: number): void {
    const object = { kind: this.spec.kind, apiVersion: 'v1', metadata: { resourceVersion: String(currentRv) } };
    const line = `${JSON.stringify({ type: 'BOOKMARK', object })}\n`;
    for (const w of this.watches) if (w.bookmarks) w.res.write(line);
  }

  #matches(obj: T, namespace: string | undefined, selector: readonly FieldTerm[]): boolean {
    if (namespace !== undefined && this.spec.namespace(obj) !== namespace) return false;
    return selector.every((t) => (this.spec.fieldValue(obj, t.field) === t.value) !== t.negate);
  }

  /**
   * What a watcher with this selector sees for a change: an object moving into the
   * selector is ADDED, out of it DELETED (as the real apiserver's filtered watch does).
   */
  #classify(w: OpenWatch, ev: ChangeEvent<T>): WatchEventType | undefined {
    const was = ev.before !== undefined && this.#matches(ev.before.obj, w.namespace, w.selector);
    const is = ev.after !== undefined && this.#matches(ev.after.obj, w.namespace, w.selector);
    if (!was && is) return 'ADDED';
    if (was && is) return 'MODIFIED';
    if (was && !is) return 'DELETED';
    return undefined;
  }

  #deliver(w: OpenWatch, ev: ChangeEvent<T>): void {
    const type = this.#classify(w, ev);
    // The object is its state as of this change (for DELETED: its final state).
    const obj = ev.after?.obj ?? ev.before?.obj;
    if (type === undefined || obj === undefined) return;
    const object = { kind: this.spec.kind, apiVersion: 'v1', ...this.spec.serialize(obj, ev.rv) };
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  #openWatch(res: ServerResponse, w: OpenWatch, query: Record<string, string>): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Clients await response headers before consuming the stream.
    res.flushHeaders();
    this.watches.add(w);
    res.on('close', () => this.watches.delete(w));
    const since = Number(query.resourceVersion ?? '0');
    if (!since) {
      // No resourceVersion: like the apiserver, start with synthetic ADDED events for current state.
      for (const r of this.#records.values()) this.#deliver(w, { rv: r.rv, before: undefined, after: r });
    } else {
      // Replay what happened after the client's list so nothing is lost between list and watch.
      for (const ev of this.#log) if (ev.rv > since) this.#deliver(w, ev);
    }
    const timeout = Number(query.timeoutSeconds ?? '0');
    if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref();
  }
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

class FakeApiServerImpl implements FakeApiServer {
  readonly token = `fake-apiserver-${randomBytes(16).toString('hex')}`;
  readonly requests: RecordedRequest[] = [];
  readonly tokenReviews: { token: string; audiences: string[] }[] = [];
  #url = '';
  #options: FakeApiServerOptions;
  #jwks: { keys: object[] };
  #pods = new Collection(PODS);
  #configMaps = new Collection(CONFIG_MAPS);
  #collections = [this.#pods, this.#configMaps] as const;
  #rv = 1;
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
    let open = 0;
    for (const c of this.#collections) open += c.watches.size;
    return open;
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
      this.#bookmarkTimer = setInterval(() => {
        for (const c of this.#collections) c.sendBookmarks(this.#rv);
      }, interval);
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
    if (this.#pods.get(pod.uid)) throw new Error(`pod uid ${pod.uid} already exists`);
    this.#pods.change(++this.#rv, pod.uid, { ...pod });
  }

  updatePod(pod: FakePod): void {
    if (!this.#pods.get(pod.uid)) throw new Error(`pod uid ${pod.uid} does not exist`);
    this.#pods.change(++this.#rv, pod.uid, { ...pod });
  }

  deletePod(uid: string): void {
    if (!this.#pods.get(uid)) throw new Error(`pod uid ${uid} does not exist`);
    this.#pods.change(++this.#rv, uid, undefined);
  }

  setConfigMap(namespace: string, name: string, data: Record<string, string>): void {
    const key = configMapKey(namespace, name);
    // Like the apiserver, a ConfigMap keeps its uid across updates and gets a new one when re-created.
    const uid = this.#configMaps.get(key)?.uid ?? randomUUID();
    this.#configMaps.change(++this.#rv, key, { namespace, name, uid, data: { ...data } });
  }

  deleteConfigMap(namespace: string, name: string): void {
    const key = configMapKey(namespace, name);
    if (!this.#configMaps.get(key)) throw new Error(`ConfigMap ${key} does not exist`);
    this.#configMaps.change(++this.#rv, key, undefined);
  }

  setDown(down: boolean, mode?: DownMode): void {
    if (!down) {
      this.#down = undefined;
      return;
    }
    this.#down = mode ?? this.#options.downMode ?? 'destroy';
    // An outage kills streams mid-flight; clients see a broken body, not a clean end.
    for (const c of this.#collections) {
      for (const w of c.watches) w.res.destroy();
      c.watches.clear();
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    for (const c of this.#collections) {
      for (const w of c.watches) w.res.end();
      c.watches.clear();
    }
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Keep-alive sockets from client dispatchers would otherwise hold close() open.
    this.#server.closeAllConnections();
    await closed;
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
    if (method === 'GET') {
      for (const collection of this.#collections) {
        const served = collection.matchPath(url.pathname);
        if (served) {
          collection.serve(res, served.namespace, query, this.#rv);
          return;
        }
      }
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
