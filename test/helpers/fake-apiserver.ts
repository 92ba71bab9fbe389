// A plain-HTTP stand-in for the Kubernetes API server, covering exactly the
// calls the agent makes: OIDC discovery + JWKS, pod and ConfigMap list/watch
// filtered by field selector, TokenReview, and reading and writing one Node
// (GET, PATCH and PUT, with resourceVersion conflicts). No cluster runs in CI, so tests
// drive the real @kubernetes/client-node against this instead of mocking it.
// This file is the HTTP side (auth, routing, outages, discovery, TokenReview,
// Node reads and writes with their optimistic concurrency);
// list/watch semantics live in list-watch.ts, object shapes in api-objects.ts.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import type { Test } from 'tap';
import type { LoadedKubeConfig } from '../../src/k8s/kube-config.ts';
import { ApiFailure, CONFIG_MAPS, type FakeNode, type FakePod, NODES, PODS, type TokenVerdict, applyPatch, configMapKey, statusBody, tokenReviewStatus } from './api-objects.ts';
import { type AnyCollection, type ListWatchRequest, ListWatchStore } from './list-watch.ts';

export type { FakeNode, FakePod, FakeTaint, TokenVerdict } from './api-objects.ts';

export type ReviewTokenFn = (token: string, audiences: string[]) => TokenVerdict | Promise<TokenVerdict>;

/** 'destroy' drops the TCP connection (network outage); '503' answers like an overloaded/restarting apiserver. */
export type DownMode = 'destroy' | '503';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** false when the bearer token was missing/wrong (answered 401). */
  authenticated: boolean;
  /** Node writes (PATCH, PUT) only: the body as sent, and its content type. */
  contentType?: string;
  body?: string;
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
  /** Creates (ADDED) or replaces (MODIFIED) a Node, as the kubelet or another controller would. */
  setNode(node: FakeNode): void;
  /** The Node as stored, with the resourceVersion it was stored at; undefined when there is none. */
  getNode(name: string): (FakeNode & { metadata: { resourceVersion: string } }) | undefined;
  /**
   * The next PATCH or PUT of a Node loses a race: `change` is applied to the stored Node first, as
   * another writer's (a new resourceVersion), so the write's resourceVersion is stale: 409.
   */
  raceNextNodeWrite(change: (node: FakeNode) => void): void;
  /** Answers every Node write with this status (403: RBAC or an admission policy said no) until called with undefined. */
  refuseNodeWrites(status: number | undefined): void;
  /** Ends every open watch cleanly, as the API server's watch timeout does; the history stays. */
  endWatches(): void;
  /** Forgets the change history and ends the open watches: a watch resumed from any resourceVersion handed out so far gets 410 Expired. */
  compactHistory(): void;
  /** Going down cuts every open watch; `mode` overrides options.downMode. */
  setDown(down: boolean, mode?: DownMode): void;
  /** Holds every list (not watch) request unanswered, as a slow API server does, until release() answers them. */
  holdLists(): { release(): void };
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

export async function startFakeApiServer(options: FakeApiServerOptions): Promise<FakeApiServer> {
  const fake = new FakeApiServerImpl(options);
  await fake.listen();
  return fake;
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
  #store = new ListWatchStore();
  #pods = this.#store.collection(PODS);
  #configMaps = this.#store.collection(CONFIG_MAPS);
  #nodes = this.#store.collection(NODES);
  #nodeRace: ((node: FakeNode) => void) | undefined;
  #nodeRefusal: number | undefined;
  #down: DownMode | undefined;
  #heldLists: (() => void)[] | undefined;
  #server = createServer((req, res) => void this.#handle(req, res));
  #closing: Promise<void> | undefined;

  constructor(options: FakeApiServerOptions) {
    this.#options = options;
    this.#jwks = options.jwks;
  }

  get url(): string {
    return this.#url;
  }

  get openWatches(): number {
    return this.#store.openWatches;
  }

  get resourceVersion(): string {
    return String(this.#store.resourceVersion);
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.#server.address() as AddressInfo;
    this.#url = `http://127.0.0.1:${port}`;
    this.#store.startBookmarks(this.#options.bookmarkIntervalMs ?? 1000);
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
    this.#pods.change(pod.uid, { ...pod });
  }

  updatePod(pod: FakePod): void {
    if (!this.#pods.get(pod.uid)) throw new Error(`pod uid ${pod.uid} does not exist`);
    this.#pods.change(pod.uid, { ...pod });
  }

  deletePod(uid: string): void {
    if (!this.#pods.get(uid)) throw new Error(`pod uid ${uid} does not exist`);
    this.#pods.change(uid, undefined);
  }

  setConfigMap(namespace: string, name: string, data: Record<string, string>): void {
    const key = configMapKey(namespace, name);
    // Like the apiserver, a ConfigMap keeps its uid across updates and gets a new one when re-created.
    const uid = this.#configMaps.get(key)?.uid ?? randomUUID();
    this.#configMaps.change(key, { namespace, name, uid, data: { ...data } });
  }

  deleteConfigMap(namespace: string, name: string): void {
    const key = configMapKey(namespace, name);
    if (!this.#configMaps.get(key)) throw new Error(`ConfigMap ${key} does not exist`);
    this.#configMaps.change(key, undefined);
  }

  setNode(node: FakeNode): void {
    this.#nodes.change(node.metadata.name, structuredClone(node));
  }

  getNode(name: string): (FakeNode & { metadata: { resourceVersion: string } }) | undefined {
    const record = this.#nodes.record(name);
    return record === undefined ? undefined : (NODES.serialize(record.obj, record.rv) as unknown as FakeNode & { metadata: { resourceVersion: string } });
  }

  raceNextNodeWrite(change: (node: FakeNode) => void): void {
    this.#nodeRace = change;
  }

  refuseNodeWrites(status: number | undefined): void {
    this.#nodeRefusal = status;
  }

  endWatches(): void {
    this.#store.closeWatches('end');
  }

  compactHistory(): void {
    this.#store.compact();
  }

  setDown(down: boolean, mode?: DownMode): void {
    if (!down) {
      this.#down = undefined;
      return;
    }
    this.#down = mode ?? this.#options.downMode ?? 'destroy';
    // An outage kills streams mid-flight; clients see a broken body, not a clean end.
    this.#store.closeWatches('destroy');
  }

  holdLists(): { release(): void } {
    this.#heldLists ??= [];
    return {
      release: () => {
        const held = this.#heldLists ?? [];
        this.#heldLists = undefined;
        for (const answer of held) answer();
      },
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#store.close();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Keep-alive sockets from client dispatchers would otherwise hold close() open.
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const authenticated = req.headers.authorization === `Bearer ${this.token}`;
    const recorded: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query, authenticated };
    this.requests.push(recorded);
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
      await this.#route(req, res, url, query, recorded);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, statusBody(500, 'InternalError', (err as Error).message));
      else res.destroy();
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, url: URL, query: Record<string, string>, recorded: RecordedRequest): Promise<void> {
    const method = req.method ?? 'GET';
    const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname)?.[1];
    if (node !== undefined) {
      await this.#node(req, res, method, decodeURIComponent(node), recorded);
      return;
    }
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
    const served = method === 'GET' ? this.#store.route(url.pathname) : null;
    if (served) {
      this.#listOrWatch(res, served.collection, served.namespace, query);
      return;
    }
    sendJson(res, 404, statusBody(404, 'NotFound', `the fake apiserver does not serve ${method} ${url.pathname}`));
  }

  #listOrWatch(res: ServerResponse, collection: AnyCollection, namespace: string | undefined, query: Record<string, string>): void {
    let request: ListWatchRequest;
    try {
      request = collection.parseRequest(namespace, query);
    } catch (err) {
      sendJson(res, 400, statusBody(400, 'BadRequest', (err as Error).message));
      return;
    }
    if (request.watch) collection.watch(res, request);
    else if (this.#heldLists !== undefined) this.#heldLists.push(() => sendJson(res, 200, collection.list(request)));
    else sendJson(res, 200, collection.list(request));
  }

  /** GET, PATCH and PUT of one Node, with the apiserver's optimistic concurrency. */
  async #node(req: IncomingMessage, res: ServerResponse, method: string, name: string, recorded: RecordedRequest): Promise<void> {
    const notFound = () => sendJson(res, 404, { ...statusBody(404, 'NotFound', `nodes "${name}" not found`), details: { name, kind: 'nodes' } });
    if (method === 'GET') {
      const stored = this.getNode(name);
      if (stored === undefined) notFound();
      else sendJson(res, 200, { kind: 'Node', apiVersion: 'v1', ...stored });
      return;
    }
    if (method !== 'PATCH' && method !== 'PUT') {
      sendJson(res, 405, statusBody(405, 'MethodNotAllowed', `the fake apiserver does not serve ${method} on nodes`));
      return;
    }
    const body = await readBody(req);
    recorded.contentType = req.headers['content-type'] ?? '';
    recorded.body = body;
    if (this.#nodeRefusal !== undefined) {
      sendJson(res, this.#nodeRefusal, statusBody(this.#nodeRefusal, this.#nodeRefusal === 403 ? 'Forbidden' : 'Invalid', `nodes "${name}" is forbidden: refused by the test`));
      return;
    }
    const race = this.#nodeRace;
    this.#nodeRace = undefined;
    const before = this.#nodes.get(name);
    if (race !== undefined && before !== undefined) {
      const raced = structuredClone(before);
      race(raced);
      this.#nodes.change(name, raced);
    }
    const current = this.getNode(name);
    if (current === undefined) {
      notFound();
      return;
    }
    let written: FakeNode & { metadata: { resourceVersion?: string } };
    try {
      written = (method === 'PUT' ? JSON.parse(body) : applyPatch(recorded.contentType, current, body)) as typeof written;
      if (typeof written !== 'object' || written === null || written.metadata?.name !== name) throw new ApiFailure(400, 'BadRequest', 'the name of the object does not match the name on the URL');
    } catch (err) {
      const failure = err instanceof ApiFailure ? err : new ApiFailure(400, 'BadRequest', (err as Error).message);
      sendJson(res, failure.status, statusBody(failure.status, failure.reason, failure.message));
      return;
    }
    // The optimistic lock: a write carrying a resourceVersion applies to that version only. A PUT
    // without one is unconditional, as Nodes allow.
    const version = written.metadata.resourceVersion;
    if (version !== undefined && version !== '' && version !== current.metadata.resourceVersion) {
      const message = `Operation cannot be fulfilled on nodes "${name}": the object has been modified; please apply your changes to the latest version and try again`;
      sendJson(res, 409, { ...statusBody(409, 'Conflict', message), details: { name, kind: 'nodes' } });
      return;
    }
    // What the apiserver keeps whatever is sent: identity, and the status (a subresource of its own).
    const { resourceVersion: _dropped, ...metadata } = written.metadata;
    const stored: FakeNode = { ...written, metadata: { ...metadata, name, uid: current.metadata.uid } };
    if (current.metadata.creationTimestamp !== undefined) stored.metadata.creationTimestamp = current.metadata.creationTimestamp;
    if (current.status === undefined) delete stored.status;
    else stored.status = current.status;
    this.#nodes.change(name, stored);
    sendJson(res, 200, { kind: 'Node', apiVersion: 'v1', ...this.getNode(name) });
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

/** The agent's Kubernetes configuration for this fake, as a kubeconfig file would give it; removed with the test. */
export async function kubeConfigFor(t: Test, api: FakeApiServer): Promise<LoadedKubeConfig> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-kube-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await api.writeKubeconfig(join(dir, 'config'));
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(join(dir, 'config'));
  return { kubeConfig, source: 'KUBECONFIG' };
}
