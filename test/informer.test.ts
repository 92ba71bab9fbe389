// The agent's own list-watch (src/k8s/informer.ts) and API calls (src/k8s/api-request.ts) against
// the fake API server over real sockets: what the owner is told through a clean end of the watch, an
// outage, and a history the server no longer keeps (410 Expired: list again, deletions included).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig, type V1Pod } from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { KubernetesApiError, apiCall } from '../src/k8s/api-request.ts';
import { startInformer } from '../src/k8s/informer.ts';
import { createLogger } from '../src/observability/logger.ts';
import { eventually } from './helpers/eventually.ts';
import { type FakeApiServer, type FakePod, startFakeApiServer } from './helpers/fake-apiserver.ts';
import { createLogAudit } from './helpers/log-audit.ts';

let api: FakeApiServer;
let kc: KubeConfig;
let dir: string;

t.before(async () => {
  api = await startFakeApiServer({ issuer: 'https://oidc.example.test/id/INFORMER', jwks: { keys: [] }, bookmarkIntervalMs: 0 });
  dir = await mkdtemp(join(tmpdir(), 'informer-'));
  await api.writeKubeconfig(join(dir, 'kubeconfig'));
  kc = new KubeConfig();
  kc.loadFromFile(join(dir, 'kubeconfig'));
});
t.teardown(async () => {
  await api.close();
  await rm(dir, { recursive: true, force: true });
});

function pod(name: string, extra: Partial<FakePod> = {}): FakePod {
  return { namespace: 'apps', name, uid: `uid-${name}`, nodeName: 'node-a', podIP: '169.254.9.1', serviceAccountName: 'sa', ...extra };
}

/** An informer on node-a's pods, recording what its owner is told; `watching` resolves once its first watch is open. */
async function watchPods(t: Test, silenceMs?: number) {
  // The previous test's informer must be gone, so that the open watch counted is this one's.
  await eventually(() => api.openWatches === 0, 'the previous informer\'s watch to end');
  const audit = createLogAudit();
  const events: string[] = [];
  let lists = 0;
  const informer = startInformer<V1Pod>({
    kubeConfig: kc,
    path: '/api/v1/pods',
    fieldSelector: 'spec.nodeName=node-a',
    onListed: () => {
      lists += 1;
    },
    onUpsert: (p) => events.push(`upsert ${p.metadata?.name} ${p.status?.podIP}`),
    onDelete: (p) => events.push(`delete ${p.metadata?.name}`),
    logger: createLogger({ level: 'debug', destination: audit.sink }),
    what: 'this node\'s pods',
    retryBaseMs: 50,
    ...(silenceMs === undefined ? {} : { silenceMs }),
  });
  t.teardown(() => informer.close());
  const watching = () => eventually(() => lists >= 1 && api.openWatches === 1, 'the first list and watch');
  return { events, audit, informer, lists: () => lists, watching };
}

const podWatches = () => api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === 'true');
const podLists = () => api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch !== 'true');

t.test('lists, then watches from the list: each change reported once, other nodes never', async (t) => {
  api.addPod(pod('a'));
  api.addPod(pod('elsewhere', { nodeName: 'node-b' }));
  t.teardown(() => {
    for (const uid of ['uid-a', 'uid-elsewhere']) api.deletePod(uid);
  });
  const w = await watchPods(t);
  await w.watching();
  t.same(w.events, ['upsert a 169.254.9.1'], 'the list');
  t.equal(w.lists(), 1);
  t.match(podWatches().at(-1)?.query, { fieldSelector: 'spec.nodeName=node-a', allowWatchBookmarks: 'true', timeoutSeconds: '300', resourceVersion: /^\d+$/ });
  api.addPod(pod('b'));
  api.updatePod(pod('a', { podIP: '169.254.9.2' }));
  api.deletePod('uid-b');
  await eventually(() => w.events.length === 4, 'three changes');
  t.same(w.events.slice(1), ['upsert b 169.254.9.1', 'upsert a 169.254.9.2', 'delete b']);
  t.same(w.audit.lines.filter((l) => l.level === 'warn'), [], 'nothing logged as failed');
  await w.informer.close();
  await eventually(() => api.openWatches === 0, 'close() to end the watch');
});

t.test('a watch the server ends is resumed from the last version, without listing again', async (t) => {
  api.addPod(pod('c'));
  t.teardown(() => api.deletePod('uid-c'));
  const w = await watchPods(t);
  await w.watching();
  const watchesBefore = podWatches().length;
  const listsBefore = podLists().length;
  api.updatePod(pod('c', { podIP: '169.254.9.3' }));
  await eventually(() => w.events.includes('upsert c 169.254.9.3'), 'the change');
  // A clean end (the server's watch timeout), then a change while no watch is open.
  api.endWatches();
  api.updatePod(pod('c', { podIP: '169.254.9.4' }));
  await eventually(() => w.events.includes('upsert c 169.254.9.4'), 'the change made while the watch was down, replayed');
  await eventually(() => podWatches().length > watchesBefore && api.openWatches === 1, 'the watch reopened');
  t.equal(podLists().length, listsBefore, 'no second list');
  t.same(w.events, ['upsert c 169.254.9.1', 'upsert c 169.254.9.3', 'upsert c 169.254.9.4'], 'each version once');
  t.same(w.audit.lines.filter((l) => l.level === 'warn'), [], 'a clean end is not a failure');
});

t.test('410 Expired: lists again, and reports what was deleted meanwhile', async (t) => {
  api.addPod(pod('d'));
  api.addPod(pod('e'));
  t.teardown(() => {
    for (const uid of ['uid-d', 'uid-f']) api.deletePod(uid);
  });
  const w = await watchPods(t);
  await w.watching();
  // The history goes (its watch ends), and with it the record of e's deletion and f's creation.
  api.setDown(true, '503');
  await eventually(() => api.openWatches === 0, 'the watch cut');
  api.deletePod('uid-e');
  api.addPod(pod('f'));
  api.compactHistory();
  api.setDown(false);
  await eventually(() => w.lists() === 2, 'a second list');
  await eventually(() => w.events.includes('delete e') && w.events.includes('upsert f 169.254.9.1'), 'the gap reconciled');
  t.same(w.events.filter((e) => e.startsWith('upsert d')), ['upsert d 169.254.9.1'], 'an unchanged pod is not reported again');
  t.ok(w.audit.lines.some((l) => l.msg === 'watch expired; listing again'), 'the relist is logged at debug');
  await eventually(() => api.openWatches === 1, 'watching again');
  api.updatePod(pod('f', { podIP: '169.254.9.5' }));
  await eventually(() => w.events.includes('upsert f 169.254.9.5'), 'changes after the relist still arrive');
});

t.test('an outage: warned once per failed attempt with the retry delay, recovered without losing a change', async (t) => {
  api.addPod(pod('g'));
  t.teardown(() => api.deletePod('uid-g'));
  const w = await watchPods(t);
  await w.watching();
  api.setDown(true, 'destroy');
  await eventually(() => w.audit.lines.some((l) => l.level === 'warn'), 'a warning');
  const warning = w.audit.lines.find((l) => l.level === 'warn');
  t.match(warning, { msg: 'watching this node\'s pods failed; keeping what was last seen', retryInMs: Number });
  api.setDown(false);
  api.updatePod(pod('g', { podIP: '169.254.9.6' }));
  await eventually(() => w.events.includes('upsert g 169.254.9.6'), 'the change after the outage');
});

t.test('a watch silent for longer than the limit is taken for dead: warned, and watched again from where it was', async (t) => {
  api.addPod(pod('s'));
  t.teardown(() => api.deletePod('uid-s'));
  // The fake sends no bookmarks here, so an open watch with no change is silent.
  const w = await watchPods(t, 300);
  await w.watching();
  const watchesBefore = podWatches().length;
  await eventually(() => w.audit.lines.some((l) => l.level === 'warn'), 'the silence noticed');
  t.match(w.audit.lines.find((l) => l.level === 'warn'), { msg: 'watching this node\'s pods failed; keeping what was last seen', error: /timeout/i });
  await eventually(() => podWatches().length > watchesBefore, 'a new watch');
  t.equal(w.lists(), 1, 'resumed from the last version, not listed again');
  api.updatePod(pod('s', { podIP: '169.254.9.7' }));
  await eventually(() => w.events.includes('upsert s 169.254.9.7'), 'changes arrive on the new watch');
});

t.test('close() before the first list succeeds: nothing is reported, no watch opens', async (t) => {
  api.addPod(pod('h'));
  t.teardown(() => api.deletePod('uid-h'));
  api.setDown(true, '503');
  const w = await watchPods(t);
  await w.informer.close();
  api.setDown(false);
  await sleep(200);
  t.same(w.events, []);
  t.equal(api.openWatches, 0);
});

t.test('apiCall: one connection for every call of a KubeConfig, the Status message in its error, never the answer\'s text', async (t) => {
  let connections = 0;
  const server = createServer((req, res) => {
    if (req.url === '/garbled') {
      // An answer that is not JSON, starting with what must never be quoted back (a TokenReview's answer echoes the token).
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('SECRET-TOKEN-VALUE and the rest');
      return;
    }
    if (req.url === '/missing') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', status: 'Failure', message: 'nodes "x" not found', code: 404 }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ path: req.url, authorization: req.headers.authorization === undefined ? 'none' : 'bearer' }));
  });
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'not-a-real-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  for (let i = 0; i < 3; i += 1) {
    t.same(await apiCall(config, { path: '/api', query: { n: String(i) } }), { path: `/api?n=${i}`, authorization: 'bearer' });
    // Calls as the agent makes them, apart: undici frees a connection a moment after its answer is read.
    await sleep(10);
  }
  t.equal(connections, 1, 'one connection (client-node\'s own clients open one per call)');
  const error = await apiCall(config, { path: '/missing' }).catch((e: unknown) => e);
  t.ok(error instanceof KubernetesApiError);
  t.match(error, { status: 404, statusMessage: 'nodes "x" not found', message: 'GET /missing: HTTP 404: nodes "x" not found' });
  const garbled = (await apiCall(config, { path: '/garbled' }).catch((e: unknown) => e)) as Error;
  t.equal(garbled.message, 'GET /garbled: the API server\'s answer is not JSON', 'a malformed answer is reported without its text');
});
