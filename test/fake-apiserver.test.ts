// Proves the fake apiserver is faithful enough for the real
// @kubernetes/client-node 2.x: typed API calls, raw authenticated GETs,
// informers with a field selector, and how the informer behaves in an outage;
// then the agent's own ConfigMap watch (src/k8s/configmap-watch.ts) against it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import {
  ApiException,
  AuthenticationV1Api,
  CoreV1Api,
  HttpMethod,
  KubeConfig,
  ListWatch,
  OpenidApi,
  PatchStrategy,
  RequestContext,
  Watch,
  WellKnownApi,
  makeInformer,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { Informer, ObjectCache, V1ConfigMap, V1Pod } from '@kubernetes/client-node';
import { exportJWK, generateKeyPair } from 'jose';
import t, { type Test } from 'tap';
import { fetch as undiciFetch } from 'undici';
import type { Response as UndiciResponse } from 'undici';
import { watchConfigMap } from '../src/k8s/configmap-watch.ts';
import { createLogger } from '../src/observability/logger.ts';
import { type FakeApiServer, type FakePod, type TokenVerdict, startFakeApiServer } from './helpers/fake-apiserver.ts';
import { type LogAudit, createLogAudit } from './helpers/log-audit.ts';
import { eventually } from './helpers/eventually.ts';

const ISSUER = 'https://oidc.example.test/id/FAKE';
const NODE_A_SELECTOR = 'spec.nodeName=node-a';

function pod(name: string, nodeName: string, extra: Partial<FakePod> = {}): FakePod {
  return { namespace: 'apps', name, uid: `uid-${name}`, nodeName, podIP: `10.0.0.${name.length}`, serviceAccountName: 'sa', ...extra };
}

async function jwks(): Promise<{ keys: object[] }> {
  const { publicKey } = await generateKeyPair('RS256', { extractable: true });
  return { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', use: 'sig', alg: 'RS256' }] };
}

// The verdict a TokenReview test expects: one known token, everything else rejected.
function reviewToken(token: string, audiences: string[]): TokenVerdict {
  if (token !== 'good-token') return { authenticated: false, error: 'invalid bearer token' };
  return { authenticated: true, namespace: 'apps', serviceAccount: 'sa', podName: 'p1', podUid: 'uid-p1', audiences };
}

/**
 * The authenticated raw GET recipe for client-node 2.x: let the KubeConfig fill
 * a RequestContext (Authorization header + undici dispatcher, exactly as the
 * generated API clients do), then fetch with those.
 */
async function rawGet(kc: KubeConfig, path: string): Promise<UndiciResponse> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('kubeconfig has no current cluster');
  const ctx = new RequestContext(`${server}${path}`, HttpMethod.GET);
  await kc.applySecurityAuthentication(ctx);
  // Must be the `undici` package's fetch (the copy client-node uses): Node's global
  // fetch bundles undici 7 and rejects an undici 8 dispatcher ("invalid onRequestStart method").
  return undiciFetch(ctx.getUrl(), { headers: ctx.getHeaders(), dispatcher: ctx.getDispatcher() });
}

interface Recorder {
  events: string[];
  errors: unknown[];
  connects: number;
}

function record(informer: Informer<V1Pod>): Recorder {
  const rec: Recorder = { events: [], errors: [], connects: 0 };
  const push = (verb: string) => (p: V1Pod) => rec.events.push(`${verb} ${p.metadata?.name} rv=${p.metadata?.resourceVersion}`);
  informer.on('add', push('add'));
  informer.on('update', push('update'));
  informer.on('delete', push('delete'));
  informer.on('error', (err) => rec.errors.push(err));
  informer.on('connect', () => rec.connects++);
  return rec;
}

const waitFor = (what: string, cond: () => boolean, timeoutMs?: number): Promise<void> => eventually(cond, what, timeoutMs);

function names(list: { metadata?: { name?: string } }[]): string[] {
  return list.map((p) => p.metadata?.name ?? '').sort();
}

let api: FakeApiServer;
let kc: KubeConfig;
let dir: string;

t.before(async () => {
  api = await startFakeApiServer({ issuer: ISSUER, jwks: await jwks(), reviewToken, bookmarkIntervalMs: 200 });
  dir = await mkdtemp(join(tmpdir(), 'fake-apiserver-'));
  await api.writeKubeconfig(join(dir, 'kubeconfig'));
  kc = new KubeConfig();
  kc.loadFromFile(join(dir, 'kubeconfig'));
  api.addPod(pod('p1', 'node-a'));
  api.addPod(pod('p2', 'node-b'));
  api.addPod(pod('host', 'node-a', { hostNetwork: true, namespace: 'kube-system' }));
});

t.teardown(async () => {
  await api.close();
  await api.close(); // idempotent
  await rm(dir, { recursive: true, force: true });
});

t.test('kubeconfig points at the fake with its token', async (t) => {
  t.equal(kc.getCurrentCluster()?.server, api.url);
  t.equal(kc.getCurrentUser()?.token, api.token);
});

t.test('CoreV1Api lists pods filtered by field selector', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  const list = await core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR });
  t.same(names(list.items), ['host', 'p1']);
  t.match(list.metadata?.resourceVersion, /^\d+$/);
  const p1 = list.items.find((p) => p.metadata?.name === 'p1');
  t.equal(p1?.metadata?.uid, 'uid-p1');
  t.equal(p1?.spec?.nodeName, 'node-a');
  t.equal(p1?.spec?.serviceAccountName, 'sa');
  t.equal(p1?.status?.podIP, '10.0.0.2');
  t.same(p1?.status?.podIPs, [{ ip: '10.0.0.2' }]);
  t.equal(list.items.find((p) => p.metadata?.name === 'host')?.spec?.hostNetwork, true);

  const namespaced = await core.listNamespacedPod({ namespace: 'apps', fieldSelector: NODE_A_SELECTOR });
  t.same(names(namespaced.items), ['p1']);

  const last = api.requests.filter((r) => r.path === '/api/v1/pods').at(-1);
  t.same(last?.query, { fieldSelector: NODE_A_SELECTOR });
  t.equal(last?.authenticated, true);
});

t.test('requests without the kubeconfig token get 401', async (t) => {
  const res = await fetch(`${api.url}/api/v1/pods`);
  t.equal(res.status, 401);
  t.equal(((await res.json()) as { reason: string }).reason, 'Unauthorized');
  t.equal(api.requests.at(-1)?.authenticated, false);

  const wrong = new KubeConfig();
  wrong.loadFromOptions({
    clusters: [{ name: 'c', server: api.url, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'not-the-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const err = await wrong
    .makeApiClient(CoreV1Api)
    .listPodForAllNamespaces()
    .catch((e: unknown) => e);
  t.ok(err instanceof ApiException);
  t.equal((err as ApiException<unknown>).code, 401);
});

t.test('discovery and JWKS via authenticated raw GET and via generated clients', async (t) => {
  const discovery = await rawGet(kc, '/.well-known/openid-configuration');
  t.equal(discovery.status, 200);
  t.same(await discovery.json(), {
    issuer: ISSUER,
    jwks_uri: `${api.url}/openid/v1/jwks`,
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
  });

  const replaced = await jwks();
  api.setJwks(replaced);
  const keyset = await rawGet(kc, '/openid/v1/jwks');
  t.equal(keyset.headers.get('content-type'), 'application/jwk-set+json');
  t.same(await keyset.json(), replaced);

  // The generated clients cover the same endpoints; they hand back parsed JSON despite the `string` type.
  const viaApi = (await kc.makeApiClient(OpenidApi).getServiceAccountIssuerOpenIDKeyset()) as unknown;
  t.same(typeof viaApi === 'string' ? JSON.parse(viaApi) : viaApi, replaced);
  const configViaApi = (await kc.makeApiClient(WellKnownApi).getServiceAccountIssuerOpenIDConfiguration()) as unknown;
  t.match(typeof configViaApi === 'string' ? JSON.parse(configViaApi) : configViaApi, { issuer: ISSUER });
});

t.test('TokenReview via AuthenticationV1Api', async (t) => {
  const authn = kc.makeApiClient(AuthenticationV1Api);
  const before = api.tokenReviews.length;
  const ok = await authn.createTokenReview({ body: { spec: { token: 'good-token', audiences: ['pods.eks.amazonaws.com'] } } });
  t.equal(ok.status?.authenticated, true);
  t.equal(ok.status?.user?.username, 'system:serviceaccount:apps:sa');
  t.same(ok.status?.user?.extra?.['authentication.kubernetes.io/pod-name'], ['p1']);
  t.same(ok.status?.user?.extra?.['authentication.kubernetes.io/pod-uid'], ['uid-p1']);
  t.same(ok.status?.audiences, ['pods.eks.amazonaws.com']);

  const bad = await authn.createTokenReview({ body: { spec: { token: 'forged', audiences: ['x'] } } });
  t.not(bad.status?.authenticated, true);
  t.equal(bad.status?.error, 'invalid bearer token');
  t.same(api.tokenReviews.slice(before), [
    { token: 'good-token', audiences: ['pods.eks.amazonaws.com'] },
    { token: 'forged', audiences: ['x'] },
  ]);
});

t.test('informer with a field selector sees only node-a pods', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  // makeInformer has no fieldSelector parameter in 2.0.1, but Watch appends its
  // query to the path, so the selector (and bookmark opt-in) can ride in the path.
  const informer = makeInformer<V1Pod>(
    kc,
    `/api/v1/pods?fieldSelector=${encodeURIComponent(NODE_A_SELECTOR)}&allowWatchBookmarks=true`,
    () => core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }),
  );
  const rec = record(informer);
  await informer.start();
  t.teardown(() => informer.stop());
  t.same(rec.events.map((e) => e.split(' ').slice(0, 2).join(' ')).sort(), ['add host', 'add p1']);
  await waitFor('watch to open', () => api.openWatches === 1);
  const watchReq = api.requests.filter((r) => r.query.watch === 'true').at(-1);
  t.match(watchReq?.query, { fieldSelector: NODE_A_SELECTOR, allowWatchBookmarks: 'true', resourceVersion: /^\d+$/ });

  rec.events.length = 0;
  api.addPod(pod('p3', 'node-a'));
  api.addPod(pod('other', 'node-b'));
  api.updatePod(pod('p3', 'node-a', { podIP: '10.9.9.9' }));
  api.updatePod(pod('other', 'node-b', { podIP: '10.9.9.8' }));
  api.deletePod('uid-p3');
  api.deletePod('uid-other');
  await waitFor('add/update/delete', () => rec.events.length >= 3);
  t.match(rec.events, [/^add p3 /, /^update p3 /, /^delete p3 /]);
  t.equal((informer as unknown as ObjectCache<V1Pod>).get('p3', 'apps'), undefined);
  t.same(names([...informer.list()]), ['host', 'p1']);

  // Bookmarks advance the informer's resourceVersion past changes it was not shown.
  const lw = informer as unknown as ListWatch<V1Pod>;
  await waitFor('bookmark', () => lw.latestResourceVersion() === api.resourceVersion);
  // The stream is ordered: the bookmark came after the node-b changes, so had any been sent it would have arrived by now.
  t.notOk(rec.events.some((e) => e.includes('other')), 'no node-b pod ever reached the informer');
  t.same(rec.errors, []);
});

t.test('ListWatch takes the field selector as a parameter', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  const lw = new ListWatch<V1Pod>(
    '/api/v1/pods',
    new Watch(kc),
    () => core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }),
    false,
    undefined,
    NODE_A_SELECTOR,
  );
  const rec = record(lw);
  await lw.start();
  t.teardown(() => lw.stop());
  api.addPod(pod('p4', 'node-a'));
  api.addPod(pod('p5', 'node-b'));
  await waitFor('add p4', () => rec.events.some((e) => e.startsWith('add p4')));
  t.notOk(rec.events.some((e) => e.includes('p5')));
  t.match(api.requests.filter((r) => r.query.watch === 'true').at(-1)?.query, { fieldSelector: NODE_A_SELECTOR });
  api.deletePod('uid-p4');
  api.deletePod('uid-p5');
});

for (const mode of ['destroy', '503'] as const) {
  t.test(`outage (${mode}): informer reports an error, stops, and resumes only when restarted`, async (t) => {
    const core = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Pod>(kc, `/api/v1/pods?fieldSelector=${encodeURIComponent(NODE_A_SELECTOR)}`, () =>
      core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }),
    );
    const rec = record(informer);
    await informer.start();
    t.teardown(() => informer.stop());
    await waitFor('watch to open', () => api.openWatches === 1);

    api.setDown(true, mode);
    await waitFor('error callback', () => rec.errors.length === 1);
    const err = rec.errors[0] as Error & { cause?: Error };
    t.comment(`${mode}: on('error') got ${err.name}: ${err.message}${err.cause ? ` (cause ${err.cause.name}: ${err.cause.message})` : ''}`);

    // Missed while down: must be delivered after recovery.
    api.addPod(pod('during', 'node-a'));
    api.setDown(false);
    const watchesBefore = api.requests.filter((r) => r.query.watch === 'true').length;
    // Absence can only be shown by waiting. The window is one-sided: a loaded machine can only make it
    // see less, never fail an informer that behaves; client-node has no retry timer to wait out.
    await sleep(1500);
    t.equal(api.requests.filter((r) => r.query.watch === 'true').length, watchesBefore, 'informer did not retry by itself');
    t.equal(api.openWatches, 0);

    // start() again resumes from the last resourceVersion; the fake replays what was missed.
    await informer.start();
    await waitFor('missed add', () => rec.events.some((e) => e.startsWith('add during')));
    t.equal(rec.errors.length, 1);
    api.deletePod('uid-during');
    await waitFor('delete during', () => rec.events.some((e) => e.startsWith('delete during')));
  });
}

for (const mode of ['503', 'destroy'] as const) {
  t.test(`start() while the apiserver is down (${mode}) resolves and reports the error`, async (t) => {
    const core = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Pod>(kc, '/api/v1/pods', () => core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }));
    const rec = record(informer);
    api.setDown(true, mode);
    t.teardown(() => api.setDown(false));
    await informer.start(); // does not reject: the failed list goes to on('error')
    t.equal(rec.errors.length, 1);
    const err = rec.errors[0] as Error & { code?: unknown };
    t.comment(`${mode}: list failure reported as ${err.name}: ${err.message.split('\n')[0]}`);
    if (mode === '503') {
      t.ok(err instanceof ApiException);
      t.equal(err.code, 503);
    } else {
      t.equal(err.message, 'fetch failed');
    }
    await informer.stop();
  });
}

t.test('a watch the server ends cleanly is re-established by the informer itself', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  // timeoutSeconds makes the fake end the stream normally, like the apiserver's watch timeout.
  const informer = makeInformer<V1Pod>(
    kc,
    `/api/v1/pods?fieldSelector=${encodeURIComponent(NODE_A_SELECTOR)}&timeoutSeconds=1`,
    () => core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }),
  );
  const rec = record(informer);
  await informer.start();
  t.teardown(() => informer.stop());
  const watches = () => api.requests.filter((r) => r.query.watch === 'true' && r.query.timeoutSeconds === '1').length;
  await waitFor('reconnect', () => watches() >= 2);
  t.same(rec.errors, [], 'a clean end is not an error');
  t.ok(rec.connects >= 2, 'connect fires on each (re)connect');
  api.addPod(pod('after-reconnect', 'node-a'));
  await waitFor('event after reconnect', () => rec.events.some((e) => e.startsWith('add after-reconnect')));
  api.deletePod('uid-after-reconnect');
});

t.test('stop() closes the watch but still fires on(error) with an AbortError', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  const informer = makeInformer<V1Pod>(kc, `/api/v1/pods?fieldSelector=${encodeURIComponent(NODE_A_SELECTOR)}`, () =>
    core.listPodForAllNamespaces({ fieldSelector: NODE_A_SELECTOR }),
  );
  const rec = record(informer);
  await informer.start();
  await waitFor('watch to open', () => api.openWatches === 1);
  const watchCount = api.requests.filter((r) => r.query.watch === 'true').length;
  await informer.stop();
  await waitFor('watch closed', () => api.openWatches === 0);
  await waitFor('error callback', () => rec.errors.length > 0);
  // A second error could only come later: a short, one-sided window (load can hide one, never invent one).
  await sleep(100);
  // client-node 2.0.1 quirk: aborting the watch is reported like any other
  // failure, so an error handler must ignore errors after its own stop().
  t.equal(rec.errors.length, 1);
  t.equal((rec.errors[0] as Error).name, 'AbortError');
  t.equal(api.requests.filter((r) => r.query.watch === 'true').length, watchCount, 'no reconnect after stop()');
});

t.test('ConfigMaps: list, field selectors and refusals through CoreV1Api', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  api.setConfigMap('cfg', 'one', { k: 'v' });
  api.setConfigMap('cfg', 'empty', {});
  api.setConfigMap('elsewhere', 'one', { k: 'other namespace' });
  t.teardown(() => {
    api.deleteConfigMap('cfg', 'one');
    api.deleteConfigMap('cfg', 'empty');
    api.deleteConfigMap('elsewhere', 'one');
  });

  const list = await core.listNamespacedConfigMap({ namespace: 'cfg' });
  t.equal(list.kind, 'ConfigMapList');
  t.equal(list.apiVersion, 'v1');
  t.equal(list.metadata?.resourceVersion, api.resourceVersion);
  t.same(names(list.items), ['empty', 'one']);
  const one = list.items.find((c) => c.metadata?.name === 'one');
  t.match(one?.metadata, { namespace: 'cfg', uid: /^[0-9a-f-]{36}$/, resourceVersion: /^\d+$/ });
  t.same(one?.data, { k: 'v' });
  t.equal(list.items.find((c) => c.metadata?.name === 'empty')?.data, undefined, 'empty data is omitted, as by the apiserver');

  t.same(names((await core.listNamespacedConfigMap({ namespace: 'cfg', fieldSelector: 'metadata.name=one' })).items), ['one']);
  t.same(names((await core.listNamespacedConfigMap({ namespace: 'cfg', fieldSelector: 'metadata.name!=one' })).items), ['empty']);
  t.same(names((await core.listNamespacedConfigMap({ namespace: 'cfg', fieldSelector: 'metadata.namespace=cfg' })).items), ['empty', 'one']);
  t.same((await core.listNamespacedConfigMap({ namespace: 'cfg', fieldSelector: 'metadata.namespace=elsewhere' })).items, []);
  const all = await core.listConfigMapForAllNamespaces({ fieldSelector: 'metadata.name=one' });
  t.same(all.items.map((c) => `${c.metadata?.namespace}/${c.metadata?.name}`).sort(), ['cfg/one', 'elsewhere/one']);
  t.equal(api.requests.at(-1)?.authenticated, true);

  // Pod-only fields and label selectors are refused like on the pods path.
  for (const query of [{ fieldSelector: 'spec.nodeName=node-a' }, { labelSelector: 'app=x' }]) {
    const err = await core.listNamespacedConfigMap({ namespace: 'cfg', ...query }).catch((e: unknown) => e);
    t.ok(err instanceof ApiException, JSON.stringify(query));
    t.equal((err as ApiException<unknown>).code, 400);
  }
  const refused = await rawGet(kc, '/api/v1/namespaces/cfg/configmaps?watch=true&fieldSelector=status.podIP%3D1.2.3.4');
  t.equal(refused.status, 400);
  t.match(await refused.json(), { kind: 'Status', reason: 'BadRequest', message: 'field label not supported: status.podIP' });

  const anonymous = await fetch(`${api.url}/api/v1/namespaces/cfg/configmaps`);
  t.equal(anonymous.status, 401);
  t.match(api.requests.at(-1), { path: '/api/v1/namespaces/cfg/configmaps', authenticated: false });
});

t.test('ConfigMaps: watch events, uids, bookmarks and replay through Watch', async (t) => {
  api.setConfigMap('cfg', 'one', { k: 'v' });
  const since = api.resourceVersion;
  const firstUid = (await kc.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace: 'cfg' })).items[0]?.metadata?.uid;
  api.setConfigMap('cfg', 'one', { k: 'v2' }); // before the watch opens: must be replayed from `since`

  const events: { type: string; object: V1ConfigMap }[] = [];
  let done: unknown;
  const watch = new Watch(kc);
  const controller = await watch.watch(
    '/api/v1/namespaces/cfg/configmaps',
    { resourceVersion: since, fieldSelector: 'metadata.name=one', allowWatchBookmarks: true },
    (type, object: V1ConfigMap) => events.push({ type, object }),
    (err: unknown) => (done = err ?? 'clean end'),
  );
  t.teardown(() => controller.abort());
  await waitFor('watch to open', () => api.openWatches === 1);
  api.setConfigMap('cfg', 'two', { z: '1' }); // other name: filtered out
  api.deleteConfigMap('cfg', 'one');
  api.setConfigMap('cfg', 'one', { k: 'again' });
  await waitFor('re-creation', () => events.filter((e) => e.type !== 'BOOKMARK').length >= 3);
  await waitFor('bookmark', () => events.some((e) => e.type === 'BOOKMARK'));

  const changes = events.filter((e) => e.type !== 'BOOKMARK');
  t.same(
    changes.map((e) => [e.type, e.object.kind, e.object.metadata?.name, e.object.data]),
    [
      ['MODIFIED', 'ConfigMap', 'one', { k: 'v2' }],
      ['DELETED', 'ConfigMap', 'one', { k: 'v2' }],
      ['ADDED', 'ConfigMap', 'one', { k: 'again' }],
    ],
  );
  const uids = changes.map((e) => e.object.metadata?.uid);
  t.equal(uids[0], firstUid, 'the uid survives an update');
  t.equal(uids[1], firstUid);
  t.not(uids[2], firstUid, 're-creation gets a new uid');
  const rvs = changes.map((e) => Number(e.object.metadata?.resourceVersion));
  t.ok(rvs[0]! > Number(since) && rvs[0]! < rvs[1]! && rvs[1]! < rvs[2]!, `increasing resourceVersions ${rvs.join(',')}`);
  const bookmark = events.find((e) => e.type === 'BOOKMARK')?.object;
  t.equal(bookmark?.kind, 'ConfigMap');
  t.match(bookmark?.metadata?.resourceVersion, /^\d+$/);

  // Without a resourceVersion the watch starts with the current state as ADDED events.
  const initial: string[] = [];
  const fresh = await watch.watch('/api/v1/namespaces/cfg/configmaps', { watch: 1 }, (type, o: V1ConfigMap) => initial.push(`${type} ${o.metadata?.name}`), () => {});
  t.teardown(() => fresh.abort());
  await waitFor('synthetic ADDED', () => initial.length === 2);
  t.same(initial.sort(), ['ADDED one', 'ADDED two']);
  t.equal(api.requests.at(-1)?.query.watch, '1');

  // setDown cuts ConfigMap watches too.
  t.equal(api.openWatches, 2);
  api.setDown(true);
  await waitFor('watch cut', () => done !== undefined);
  api.setDown(false);
  t.not(done, 'clean end', 'an outage is not a clean end');
  t.equal(api.openWatches, 0);
  api.deleteConfigMap('cfg', 'one');
  api.deleteConfigMap('cfg', 'two');
});

/** The agent's ConfigMap watch, with everything it reported. */
interface WatchedConfigMap {
  readonly seen: (Record<string, string> | undefined)[];
  readonly audit: LogAudit;
  close(): Promise<void>;
}

function watchAgentConfigMap(t: Test, name: string): WatchedConfigMap {
  const seen: (Record<string, string> | undefined)[] = [];
  const audit = createLogAudit();
  audit.secrets.add(api.token);
  const watcher = watchConfigMap({
    kubeConfig: kc,
    configMap: { namespace: 'agent', name },
    logger: createLogger({ level: 'debug', destination: audit.sink }),
    onData: (data) => seen.push(data === undefined ? undefined : { ...data }),
    retryBaseMs: 20,
  });
  t.teardown(async () => {
    await watcher.close();
    audit.assertClean();
  });
  return { seen, audit, close: () => watcher.close() };
}

/** Waits until the latest onData call carried `expected`. */
function waitForData(w: WatchedConfigMap, expected: Record<string, string> | undefined, what: string): Promise<void> {
  return waitFor(what, () => w.seen.length > 0 && isDeepStrictEqual(w.seen.at(-1), expected));
}

const configMapWatches = () => api.requests.filter((r) => r.path === '/api/v1/namespaces/agent/configmaps' && r.query.watch === 'true');

t.test('watchConfigMap: absent, created, updated, deleted; other ConfigMaps never reported', async (t) => {
  api.setConfigMap('agent', 'neighbour', { x: 'before' });
  api.setConfigMap('other-ns', 'assoc', { x: 'same name, other namespace' });
  t.teardown(() => {
    api.deleteConfigMap('agent', 'neighbour');
    api.deleteConfigMap('other-ns', 'assoc');
  });
  const w = watchAgentConfigMap(t, 'assoc');
  await waitFor('first onData', () => w.seen.length > 0);
  t.same(w.seen, [undefined], 'absent at the list: onData(undefined)');
  await waitFor('watch to open', () => api.openWatches === 1);
  t.match(configMapWatches().at(-1)?.query, { fieldSelector: 'metadata.name=assoc', allowWatchBookmarks: 'true', resourceVersion: /^\d+$/ });
  t.equal(configMapWatches().at(-1)?.query.labelSelector, undefined);

  api.setConfigMap('agent', 'assoc', { a: '1' });
  await waitForData(w, { a: '1' }, 'created');
  api.setConfigMap('agent', 'neighbour', { x: 'after' });
  api.setConfigMap('agent', 'assoc', { a: '2', b: '3' });
  await waitForData(w, { a: '2', b: '3' }, 'updated');
  api.setConfigMap('agent', 'assoc', {});
  await waitForData(w, {}, 'emptied');
  api.deleteConfigMap('agent', 'neighbour');
  api.setConfigMap('agent', 'neighbour', { x: 'recreated' });
  api.deleteConfigMap('agent', 'assoc');
  await waitForData(w, undefined, 'deleted');
  // The stream is ordered: the neighbour's changes came before the delete, so they would have been reported by now.
  t.same(w.seen, [undefined, { a: '1' }, { a: '2', b: '3' }, {}, undefined], 'exactly one onData per change, none for the neighbours');
  t.same(w.audit.lines.filter((l) => l.level === 'warn'), [], 'no failure logged');

  await w.close();
  await waitFor('close() to end the watch', () => api.openWatches === 0);
  api.setConfigMap('agent', 'assoc', { late: 'yes' });
  // No watch is open, so nothing can carry the change; the wait is one-sided, for a watch reopened by mistake.
  await sleep(100);
  t.equal(w.seen.length, 5, 'nothing reported after close()');
  api.deleteConfigMap('agent', 'assoc');
});

t.test('watchConfigMap: a ConfigMap present at the start is reported with its data', async (t) => {
  api.setConfigMap('agent', 'present', { role: 'arn:aws:iam::111122223333:role/x' });
  t.teardown(() => api.deleteConfigMap('agent', 'present'));
  const w = watchAgentConfigMap(t, 'present');
  await waitForData(w, { role: 'arn:aws:iam::111122223333:role/x' }, 'initial data');
  await waitFor('watch to open', () => api.openWatches === 1);
  api.setConfigMap('agent', 'present', { role: 'changed' });
  await waitForData(w, { role: 'changed' }, 'change');
  t.notOk(w.seen.includes(undefined), 'never reported absent');
  const distinct = w.seen.filter((d, i) => i === 0 || !isDeepStrictEqual(d, w.seen[i - 1]));
  t.same(distinct, [{ role: 'arn:aws:iam::111122223333:role/x' }, { role: 'changed' }]);
  // The list reports the objects, and ListWatch's add events repeat them: the informer reports each once.
  t.same(w.seen, [{ role: 'arn:aws:iam::111122223333:role/x' }, { role: 'changed' }], 'each version reported once');
});

for (const mode of ['destroy', '503'] as const) {
  t.test(`watchConfigMap: restarts by itself after an outage (${mode})`, async (t) => {
    api.setConfigMap('agent', 'outage', { v: '1' });
    t.teardown(() => api.deleteConfigMap('agent', 'outage'));
    const w = watchAgentConfigMap(t, 'outage');
    await waitForData(w, { v: '1' }, 'initial data');
    await waitFor('watch to open', () => api.openWatches === 1);

    api.setDown(true, mode);
    t.teardown(() => api.setDown(false));
    const failures = () => w.audit.lines.filter((l) => l.level === 'warn');
    await waitFor('two failed attempts', () => failures().length >= 2);
    t.match(failures()[0], { msg: 'watching ConfigMap agent/outage failed; keeping what was last seen', retryInMs: Number });
    api.setConfigMap('agent', 'outage', { v: 'changed while down' });
    t.same(w.seen.at(-1), { v: '1' }, 'keeps the last data while down');

    const watchesBefore = configMapWatches().length;
    api.setDown(false);
    await waitForData(w, { v: 'changed while down' }, 'the change missed while down');
    await waitFor('watch to reopen', () => api.openWatches === 1);
    t.ok(configMapWatches().length > watchesBefore, 'the watch was re-requested');
    api.setConfigMap('agent', 'outage', { v: 'after' });
    await waitForData(w, { v: 'after' }, 'a change after recovery');
    api.deleteConfigMap('agent', 'outage');
    api.setConfigMap('agent', 'outage', { v: 'recreated' }); // for the teardown
    await waitForData(w, { v: 'recreated' }, 'delete and re-create after recovery');
    t.ok(w.seen.includes(undefined), 'the delete was reported');
  });
}

t.test('watchConfigMap: close() while the first list is in flight opens no watch and reports nothing', async (t) => {
  api.setConfigMap('agent', 'early-close', { v: '1' });
  t.teardown(() => api.deleteConfigMap('agent', 'early-close'));
  const watchesBefore = configMapWatches().length;
  const w = watchAgentConfigMap(t, 'early-close');
  await w.close();
  api.setConfigMap('agent', 'early-close', { v: '2' });
  // Absence can only be shown by waiting: long enough for a list and a watch on loopback. One-sided:
  // load can make it see less, never fail a watch that stays closed.
  await sleep(300);
  t.same(w.seen, [], 'nothing reported after close()');
  t.equal(configMapWatches().length, watchesBefore, 'no watch opened');
  t.equal(api.openWatches, 0);
});

t.test('Nodes: GET, PATCH and PUT through CoreV1Api, with resourceVersion conflicts', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  const name = 'node-writes';
  api.setNode({ metadata: { name, uid: 'uid-n1', labels: { a: '1' } }, spec: { taints: [{ key: 'k1', effect: 'NoSchedule' }, { key: 'k2', value: 'v', effect: 'NoExecute' }], futureField: 'kept' }, status: { phase: 'Running' } });
  const read = await core.readNode({ name });
  t.equal(read.metadata?.resourceVersion, api.getNode(name)?.metadata.resourceVersion);
  t.same(read.spec?.taints?.map((taint) => taint.key), ['k1', 'k2']);

  const removeFirst = (resourceVersion: string) => [{ op: 'replace', path: '/metadata/resourceVersion', value: resourceVersion }, { op: 'remove', path: '/spec/taints/0' }];
  const patched = await core.patchNode({ name, body: removeFirst(read.metadata!.resourceVersion!) });
  t.same(patched.spec?.taints?.map((taint) => taint.key), ['k2'], 'a JSON patch (client-node\'s default) carrying the current version applies');
  t.equal(api.getNode(name)?.spec.futureField, 'kept', 'and keeps the fields client-node does not know');
  await t.rejects(core.patchNode({ name, body: removeFirst(read.metadata!.resourceVersion!) }), { code: 409 }, 'the same patch again carries a stale version: 409');
  t.same(api.getNode(name)?.spec.taints, [{ key: 'k2', value: 'v', effect: 'NoExecute' }], 'and changes nothing');
  await t.rejects(core.patchNode({ name, body: [{ op: 'test', path: '/spec/taints/0/key', value: 'k1' }] }), { code: 422 }, 'a failed test op: 422, as the apiserver answers');

  const merged = await core.patchNode({ name, body: { metadata: { labels: { b: '2' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  t.same(merged.metadata?.labels, { a: '1', b: '2' }, 'a merge patch merges');

  const current = await core.readNode({ name });
  api.raceNextNodeWrite((node) => {
    node.metadata.annotations = { raced: 'yes' };
  });
  await t.rejects(core.replaceNode({ name, body: current }), { code: 409 }, 'a PUT that lost a race to another writer: 409');
  t.equal(api.getNode(name)?.metadata.annotations?.raced, 'yes', 'the other writer\'s change stands');
  const fresh = await core.readNode({ name });
  fresh.spec = { ...fresh.spec, unschedulable: true };
  const replaced = await core.replaceNode({ name, body: fresh });
  t.equal(replaced.spec?.unschedulable, true, 'a PUT with the current version applies');
  t.equal(api.getNode(name)?.spec.futureField, undefined, 'and, through client-node\'s models, drops what they do not know: why the agent patches');
  t.same(api.getNode(name)?.status, { phase: 'Running' }, 'a write of the Node keeps its status');

  await t.rejects(core.readNode({ name: 'no-such-node' }), { code: 404 });
  await t.rejects(core.patchNode({ name: 'no-such-node', body: [] }), { code: 404 });
  t.equal(api.requests.filter((r) => r.method === 'PATCH').at(-2)?.contentType, 'application/merge-patch+json', 'writes are recorded with their content type');
});
