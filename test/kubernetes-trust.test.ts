import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { EmulatedCluster } from './emulator/emulated-cluster.ts';
import { type ProjectedTokenClaims, createTokenIssuer } from './emulator/token-issuer.ts';
import { expectSignatureRefused, forgeriesUnderKid } from './helpers/forgeries.ts';
import { type FakeApiServer, type FakePod, kubeConfigFor, startFakeApiServer } from './helpers/fake-apiserver.ts';
import { type Harness, NODE_CREDENTIALS, sendRequest, startHarness, startTestCluster } from './helpers/harness.ts';
import { eventually } from './helpers/eventually.ts';
import { createLogAudit } from './helpers/log-audit.ts';
import { buildAgent } from '../src/agent.ts';
import { parseServerArgs } from '../src/config/index.ts';
import { createLogger } from '../src/observability/logger.ts';

const NODE = 'node-a';

interface Cluster {
  readonly h: Harness;
  readonly api: FakeApiServer;
  readonly stateDir: string;
}


/** Emulator, fake API server trusting the emulator's token issuer, and an agent bound to node-a. */
async function startCluster(t: Test, options: { args?: string[]; stateDir?: string; apiDown?: boolean; reviewToken?: Parameters<typeof startFakeApiServer>[0]['reviewToken'] } = {}): Promise<Cluster> {
  const stateDir = options.stateDir ?? (await mkdtemp(join(tmpdir(), 'pia-state-')));
  t.teardown(() => rm(stateDir, { recursive: true, force: true }));
  let api: FakeApiServer | undefined;
  const h = await startHarness(t, {
    beforeAgent: async (cluster: EmulatedCluster) => {
      api = await startFakeApiServer({ issuer: cluster.issuer.issuer, jwks: await cluster.issuer.jwks(), bookmarkIntervalMs: 200, ...(options.reviewToken === undefined ? {} : { reviewToken: options.reviewToken }) });
      t.teardown(() => api?.close());
      if (options.apiDown === true) api.setDown(true);
      return { kubernetes: await kubeConfigFor(t, api), args: ['--node-name', NODE, '--state-dir', stateDir, ...(options.args ?? [])] };
    },
  });
  return { h, api: api as FakeApiServer, stateDir };
}

const pod = (name: string, extra: Partial<FakePod> = {}): FakePod => ({ namespace: 'default', name, uid: `uid-${name}`, nodeName: NODE, podIP: '127.0.0.1', serviceAccountName: 'app', ...extra });
const tokenFor = (h: Harness, p: FakePod) => h.token({ namespace: p.namespace, serviceAccount: 'app', podName: p.name, podUid: p.uid });

t.test('jwks: a good token from a pod on this node is served; keys are stored 0700', async (t) => {
  const { h, api, stateDir } = await startCluster(t);
  const web = pod('web');
  api.addPod(web);
  await eventually(() => h.audit.lines.some((l) => l.msg === 'Kubernetes trust set up'), 'trust');
  t.match(h.audit.lines.find((l) => l.msg === 'Kubernetes trust set up'), { tokenVerification: 'jwks', podBinding: 'on', node: NODE });
  let reply = await h.send({ authorization: await tokenFor(h, web) });
  for (let i = 0; reply.status === 403 && i < 40; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    reply = await h.send({ authorization: await tokenFor(h, web) });
  }
  t.equal(reply.status, 200, reply.text);
  t.equal((await stat(stateDir)).mode & 0o777, 0o700);
  t.ok(api.requests.some((r) => r.path === '/openid/v1/jwks'), 'keys read from the API server');
});

const isPodList = (r: { path: string; query: Record<string, string> }) => r.path === '/api/v1/pods' && r.query.watch !== 'true';

/** An agent built in process with pod binding on, against a fake API server whose lists are held (a slow API server: the keys come at once, the pod list when released). */
async function agentWithListsHeld(t: Test, logger: ReturnType<typeof createLogger>, pods: readonly FakePod[] = []) {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const api = await startFakeApiServer({ issuer: cluster.issuer.issuer, jwks: await cluster.issuer.jwks() });
  t.teardown(() => api.close());
  const stateDir = await mkdtemp(join(tmpdir(), 'pia-state-'));
  t.teardown(() => rm(stateDir, { recursive: true, force: true }));
  for (const p of pods) api.addPod(p);
  const lists = api.holdLists();
  t.teardown(() => lists.release());
  const args = ['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '--node-name', NODE, '--state-dir', stateDir, '--pod-binding', 'on'];
  const agent = buildAgent(parseServerArgs(args, {}).config!, { logger, kubernetes: await kubeConfigFor(t, api), credentialProvider: async () => NODE_CREDENTIALS });
  return { cluster, api, agent, lists };
}

t.test('pod binding: nothing is bound for pods until this node\'s pods are listed, and /readyz says so meanwhile', async (t) => {
  const web = pod('web');
  const audit = createLogAudit();
  const { cluster, api, agent, lists } = await agentWithListsHeld(t, createLogger({ level: 'info', destination: audit.sink }), [web]);
  t.teardown(() => agent.close());
  const listening = agent.listen();
  let bound = false;
  void listening.then(() => {
    bound = true;
  });
  await eventually(() => api.requests.some(isPodList), 'the pod list asked for');
  const line = audit.lines.find((l) => l.msg === 'probes and metrics bound; the credential listeners follow once the agent can answer');
  const probePort = Number(String(line?.probe).split(':')[1]);
  const waiting = await sendRequest(probePort, { path: '/readyz', host: '127.0.0.1' });
  t.equal(waiting.status, 503);
  t.match(waiting.json, { ready: false, checks: { listeners: [], nodeCredentials: { ok: true }, pods: { ok: false, error: /not been listed yet/ } } });
  t.notOk(bound, 'no credential listener while the list is held');
  const paths = api.requests.map((r) => (isPodList(r) ? 'list' : r.path));
  t.ok(paths.indexOf('list') < paths.indexOf('/openid/v1/jwks'), `the list is asked for alongside the keys, not after them: ${paths.join(', ')}`);
  lists.release();
  const addresses = await listening;
  const token = await cluster.issuer.issue({ namespace: web.namespace, serviceAccount: 'app', podName: web.name, podUid: web.uid });
  audit.secrets.add(token);
  const reply = await sendRequest(addresses.credentials[0]!.port, { authorization: token }, audit);
  t.equal(reply.status, 200, `the first request is served, never PodListUnavailable: ${reply.text}`);
  const ready = await sendRequest(probePort, { path: '/readyz', host: '127.0.0.1' });
  t.equal(ready.status, 200, ready.text);
  t.match(ready.json, { ready: true, checks: { pods: { ok: true } } });
});

t.test('pod binding: a shutdown while the pod list is awaited ends the start-up', async (t) => {
  const { api, agent } = await agentWithListsHeld(t, createLogger({ level: 'fatal' }));
  const stopped = agent.listen().then(() => 'bound', (error: Error) => error.name);
  await eventually(() => api.requests.some(isPodList), 'the pod list asked for');
  await agent.close();
  t.equal(await stopped, 'AbortError', 'the wait ends with the shutdown, nothing bound');
});

t.test('refusals that cost no upstream call: bad signature, pod elsewhere, replayed from another address', async (t) => {
  const { h, api } = await startCluster(t);
  const here = pod('here');
  const elsewhere = pod('elsewhere', { nodeName: 'node-b' });
  const remote = pod('remote', { podIP: '169.254.9.9' });
  const hostNet = pod('host-net', { podIP: '10.0.0.1', hostNetwork: true });
  for (const p of [here, elsewhere, remote, hostNet]) api.addPod(p);
  const forger = await createTokenIssuer();
  const forged = await forger.issue({ namespace: 'default', serviceAccount: 'app', podName: here.name, podUid: here.uid });
  h.audit.secrets.add(forged);
  // Let the informer list the pods first.
  await eventually(async () => (await h.send({ authorization: await tokenFor(h, here) })).status === 200, 'the pods to be listed');
  const before = h.emulator.callCount;
  const cases: [string, string, number, string][] = [
    ['forged signature', forged, 401, 'TokenSignatureInvalid'],
    ['pod on another node', await tokenFor(h, elsewhere), 403, 'PodNotOnNode'],
    ['pod that does not exist', await tokenFor(h, pod('ghost')), 403, 'PodNotOnNode'],
    ['token replayed from another address', await tokenFor(h, remote), 403, 'SourceAddressMismatch'],
  ];
  for (const [name, authorization, status, code] of cases) {
    const reply = await h.send({ authorization });
    t.equal(reply.status, status, name);
    t.equal(reply.json?.Code, code, name);
  }
  t.equal(h.emulator.callCount, before, 'none of them reached EKS Auth');
  t.equal((await h.send({ authorization: await tokenFor(h, hostNet) })).status, 200, 'a host-network pod shares the node\'s address');
});

t.test('a bad signature under the cluster\'s own kid: refused as such, before any upstream call or key reload', async (t) => {
  const { h, api } = await startCluster(t);
  const holder = pod('holder');
  const victim = pod('victim');
  api.addPod(holder);
  api.addPod(victim);
  const genuine = await tokenFor(h, holder);
  await eventually(async () => (await h.send({ authorization: genuine })).status === 200, 'the holder\'s pod to be listed');
  const calls = h.emulator.callCount;
  const jwksReads = () => api.requests.filter((r) => r.path === '/openid/v1/jwks').length;
  const readsBefore = jwksReads();
  // Everything but the signature is right: only the signature check stands between these and the victim's role.
  const asVictim = (claims: ProjectedTokenClaims): ProjectedTokenClaims => ({ ...claims, 'kubernetes.io': { ...claims['kubernetes.io'], pod: { name: victim.name, uid: victim.uid } } });
  const cases = await forgeriesUnderKid(genuine, h.issuer.kid, {
    name: 'another pod',
    claims: asVictim,
    subject: { namespace: 'default', serviceAccount: 'app', podName: victim.name, podUid: victim.uid },
  });
  await expectSignatureRefused(t, genuine, cases, h);
  t.equal(h.emulator.callCount, calls, 'none reached EKS Auth');
  t.equal(jwksReads(), readsBefore, 'a known kid is no reason to reload the keys');
  t.equal((await h.send({ authorization: await tokenFor(h, victim) })).status, 200, 'the victim\'s own token is still served');
});

t.test('an unknown kid reloads the keys once: the cluster rotated its signing key', async (t) => {
  const { h, api } = await startCluster(t);
  const web = pod('web');
  api.addPod(web);
  const rotated = await createTokenIssuer();
  api.setJwks({ keys: [...(await h.issuer.jwks()).keys, ...(await rotated.jwks()).keys] });
  const token = await rotated.issue({ namespace: 'default', serviceAccount: 'app', podName: web.name, podUid: web.uid });
  h.audit.secrets.add(token);
  const jwksReads = () => api.requests.filter((r) => r.path === '/openid/v1/jwks').length;
  const readsBefore = jwksReads();
  let reply = await h.send({ authorization: token });
  for (let i = 0; reply.json?.Code === 'PodListUnavailable' && i < 40; i += 1) reply = await h.send({ authorization: token });
  t.not(reply.json?.Code, 'TokenSignatureInvalid', 'the new key was fetched and the token verified');
  t.equal(jwksReads(), readsBefore + 1, 'one reload');
  t.equal(h.emulator.callCount, 1, 'and the token went on to EKS Auth (whose emulator knows only the old key)');
  const unknown = await (await createTokenIssuer()).issue({ namespace: 'default', serviceAccount: 'app', podName: web.name, podUid: web.uid });
  h.audit.secrets.add(unknown);
  t.equal((await h.send({ authorization: unknown })).json?.Code, 'TokenSignatureInvalid');
  t.equal((await h.send({ authorization: unknown })).json?.Code, 'TokenSignatureInvalid');
  t.equal(jwksReads(), readsBefore + 1, 'no further reload inside the cooldown: forged kids cannot drive API calls');
});

t.test('a kubelet token rotation is a cache hit; a deleted pod loses its credentials', async (t) => {
  const { h, api } = await startCluster(t);
  const web = pod('web');
  api.addPod(web);
  let first = await h.send({ authorization: await tokenFor(h, web) });
  for (let i = 0; first.status !== 200 && i < 40; i += 1) first = await h.send({ authorization: await tokenFor(h, web) });
  t.equal(first.status, 200);
  const calls = h.emulator.callCount;
  const rotated = await h.send({ authorization: await h.token({ namespace: 'default', serviceAccount: 'app', podName: web.name, podUid: web.uid, issuedAt: Math.floor(Date.now() / 1000) + 1 }) });
  t.equal(rotated.status, 200);
  t.equal(rotated.json?.AccessKeyId, first.json?.AccessKeyId, 'same credentials for the new token');
  t.equal(h.emulator.callCount, calls, 'no upstream call');
  t.match(await h.agent.metrics.registry.getSingleMetricAsString('pod_identity_cache_lookups_total'), /outcome="hit"\} 1(\n|$)/, 'answered as a hit');

  api.deletePod(web.uid);
  await eventually(() => h.agent.cache.size === 0, 'the pod\'s entry to be dropped');
  t.match(await h.agent.metrics.registry.metrics(), /pod_identity_cache_evictions_total\{reason="pod_deleted"\} 1/);
  t.equal((await h.send({ authorization: await tokenFor(h, web) })).json?.Code, 'PodNotOnNode');
});

t.test('API server down during the run: the last good keys and pods keep verifying', async (t) => {
  const { h, api } = await startCluster(t);
  const web = pod('web');
  api.addPod(web);
  for (let i = 0; i < 40 && (await h.send({ authorization: await tokenFor(h, web) })).status !== 200; i += 1) await new Promise((r) => setTimeout(r, 50));
  api.setDown(true);
  const reply = await h.send({ authorization: await tokenFor(h, web) });
  t.equal(reply.status, 200, 'a new token of the same pod, verified with the keys in memory');
  api.setDown(false);
});

t.test('API server down at start: stored keys from an earlier run verify; without them, verification is off', async (t) => {
  const stateDir = await mkdtemp(join(tmpdir(), 'pia-state-'));
  const earlier = await startCluster(t, { stateDir });
  await eventually(() => earlier.h.audit.lines.some((l) => l.msg === 'service-account issuer keys loaded'), 'keys stored');
  await earlier.h.agent.close();

  const cold = await startCluster(t, { apiDown: true, args: ['--pod-binding', 'off'] });
  t.match(cold.h.audit.lines.find((l) => l.msg === 'Kubernetes trust set up'), { tokenVerification: 'none' });
  t.ok(cold.h.audit.lines.some((l) => /no issuer keys are stored/.test(String(l.msg))), 'says so');

  // The same state directory, another emulated cluster whose keys differ: the stored (earlier) keys decide.
  const warm = await startCluster(t, { apiDown: true, stateDir, args: ['--pod-binding', 'off'] });
  t.ok(warm.h.audit.lines.some((l) => l.msg === 'using the issuer keys stored by an earlier run'));
  t.match(warm.h.audit.lines.find((l) => l.msg === 'Kubernetes trust set up'), { tokenVerification: 'jwks' });
  const reply = await warm.h.send({ authorization: await warm.h.token() });
  t.equal(reply.json?.Code, 'TokenSignatureInvalid', 'this cluster\'s tokens are not signed by the stored keys');
});

t.test('API server down at start, auto: without a verifier, the pod list begun alongside the keys is let go of', async (t) => {
  const { h, api } = await startCluster(t, { apiDown: true });
  t.match(h.audit.lines.find((l) => l.msg === 'Kubernetes trust set up'), { tokenVerification: 'none', podBinding: 'off' });
  const podCalls = () => api.requests.filter((request) => request.path === '/api/v1/pods').length;
  t.ok(podCalls() > 0, 'the list was asked for, alongside the keys');
  const before = podCalls();
  // Back up: a pod watch still running would list again at its next retry (1 s at most, the first
  // time) and stay open; two retries' worth of waiting shows whether it was stopped.
  api.setDown(false);
  await new Promise((resolve) => setTimeout(resolve, 2500));
  t.equal(podCalls(), before, 'no pod list or watch after trust was set up');
  t.equal(api.openWatches, 0, 'no watch open');
});

t.test('tokenreview: the API server decides', async (t) => {
  const { h, api } = await startCluster(t, {
    args: ['--token-verification', 'tokenreview'],
    reviewToken: (token) => (token.length > 0 && !token.endsWith('x') ? { authenticated: true, namespace: 'default', serviceAccount: 'app', podName: 'web', podUid: 'uid-web', audiences: ['pods.eks.amazonaws.com'] } : { authenticated: false }),
  });
  api.addPod(pod('web'));
  let reply = await h.send({ authorization: await tokenFor(h, pod('web')) });
  for (let i = 0; reply.status !== 200 && i < 40; i += 1) reply = await h.send({ authorization: await tokenFor(h, pod('web')) });
  t.equal(reply.status, 200);
  t.ok(api.tokenReviews.length >= 1);
  const reviews = api.tokenReviews.length;
  const again = await h.send({ authorization: (await tokenFor(h, pod('web'))) });
  t.equal(again.status, 200);
  t.equal(api.tokenReviews.length, reviews + 1, 'a new token is reviewed');
  const cachedToken = await tokenFor(h, pod('web'));
  await h.send({ authorization: cachedToken });
  await h.send({ authorization: cachedToken });
  t.equal(api.tokenReviews.length, reviews + 2, 'a verdict is remembered for its token');
  const rejected = await h.send({ authorization: `${(await tokenFor(h, pod('web'))).slice(0, -1)}x` });
  t.equal(rejected.json?.Code, 'TokenNotAuthenticated');
  t.equal(rejected.status, 401);
});
