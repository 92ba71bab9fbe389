// Proves the fake apiserver is faithful enough for the real
// @kubernetes/client-node 2.x: typed API calls, raw authenticated GETs,
// informers with a field selector, and how the informer behaves in an outage.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  AuthenticationV1Api,
  CoreV1Api,
  HttpMethod,
  KubeConfig,
  ListWatch,
  OpenidApi,
  RequestContext,
  Watch,
  WellKnownApi,
  makeInformer,
} from '@kubernetes/client-node';
import type { Informer, ObjectCache, V1Pod } from '@kubernetes/client-node';
import { exportJWK, generateKeyPair } from 'jose';
import t from 'tap';
import { fetch as undiciFetch } from 'undici';
import type { Response as UndiciResponse } from 'undici';
import { type FakeApiServer, type FakePod, type TokenVerdict, startFakeApiServer } from './helpers/fake-apiserver.ts';

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

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

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
  await sleep(300);
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
  await waitFor('reconnect', () => watches() >= 2, 4000);
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
  await sleep(100);
  // client-node 2.0.1 quirk: aborting the watch is reported like any other
  // failure, so an error handler must ignore errors after its own stop().
  t.equal(rec.errors.length, 1);
  t.equal((rec.errors[0] as Error).name, 'AbortError');
  t.equal(api.requests.filter((r) => r.query.watch === 'true').length, watchCount, 'no reconnect after stop()');
});
