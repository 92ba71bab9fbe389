import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { buildAgent } from '../src/agent.ts';
import { parseServerArgs } from '../src/config/index.ts';
import { monitorEventLoop } from '../src/observability/event-loop.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createHttpServer, listen } from '../src/server/http-server.ts';
import { type ProbeOptions, createProbeHandler } from '../src/server/probe-handler.ts';
import { startServerProcess } from './helpers/cli-process.ts';
import { PATIENT_RETRY, SELF_CHECK_ID, sendRequest, startHarness, startTestCluster } from './helpers/harness.ts';
import { type Gate, gate, refusingPort, silentServer } from './helpers/local-servers.ts';
import { eventually } from './helpers/eventually.ts';
import { createLogAudit } from './helpers/log-audit.ts';

const probe = (port: number, path: string) => sendRequest(port, { path, host: '127.0.0.1' });
/** For probe handlers built here whose time limit is not what a test is about: no stall of a loaded machine reaches it. */
const UNHURRIED_MS = 30_000;
const NODE_KEYS = async () => ({ accessKeyId: 'a', secretAccessKey: 'b' });

/** A probe handler of its own (healthy node keys, not draining) on a port of its own, closed with the test. */
async function standaloneProbes(t: Test, options: Pick<ProbeOptions, 'listeners'> & Partial<ProbeOptions>): Promise<number> {
  const eventLoop = monitorEventLoop();
  const server = createHttpServer(createProbeHandler({ podPort: undefined, selfCheckId: SELF_CHECK_ID, nodeCredentials: NODE_KEYS, eventLoop, draining: () => false, ...options }));
  const { port } = await listen(server, '127.0.0.1', 0);
  t.teardown(() => {
    server.close();
    eventLoop.close();
  });
  return port;
}

t.test('healthy: /healthz reports the event loop, /readyz every check', async (t) => {
  const h = await startHarness(t);
  const health = await probe(h.addresses.probe.port, '/healthz');
  t.equal(health.status, 200);
  t.match(health.json, { status: 'ok', eventLoopDelayMs: { p99Ms: Number, maxMs: Number } });
  const ready = await probe(h.addresses.probe.port, '/readyz');
  t.equal(ready.status, 200);
  t.match(ready.json, { ready: true, draining: false, checks: { listeners: [{ address: `127.0.0.1:${h.addresses.credentials[0]?.port}`, ok: true }], nodeCredentials: { ok: true } } });
  t.equal((await probe(h.addresses.probe.port, '/other')).status, 404);
});

t.test('a listener that refuses connections makes /readyz fail, naming it', async (t) => {
  const h = await startHarness(t);
  const good = h.addresses.credentials[0] as AddressInfo;
  const dead: AddressInfo = { address: '127.0.0.1', family: 'IPv4', port: (await refusingPort(t)).port };
  const ready = await probe(await standaloneProbes(t, { listeners: () => [good, dead], timeoutMs: UNHURRIED_MS }), '/readyz');
  t.equal(ready.status, 503);
  // The refusal itself is the answer, at once: not a check left to run into its time limit.
  t.match(ready.json, { ready: false, checks: { listeners: [{ ok: true }, { address: `127.0.0.1:${dead.port}`, ok: false, error: /ECONNREFUSED/ }] } });
});

t.test('a listener that accepts and never answers: each check has its own limit, so /readyz answers inside the kubelet\'s 1 s', async (t) => {
  const silent = await silentServer(t);
  const listener: AddressInfo = { address: '127.0.0.1', family: 'IPv4', port: silent.port };
  const ready = await probe(await standaloneProbes(t, { listeners: () => [listener] }), '/readyz');
  t.equal(ready.status, 503);
  // The limit the handler gave the check (its default), not how long this machine took to get there.
  t.match(ready.json, { ready: false, checks: { listeners: [{ address: `127.0.0.1:${silent.port}`, ok: false, error: 'no answer within 800 ms' }] } });
});

t.test('readiness checks the pods\' path and tells this agent from an impostor there', async (t) => {
  const h = await startHarness(t);
  const listener = h.addresses.credentials[0] as AddressInfo;
  // Whatever else might answer where pods connect: a hostPort workload, or a NAT rule that won over the redirect.
  const impostor = createServer((_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"default backend - 404"}'));
  impostor.listen(0, '127.0.0.1');
  await once(impostor, 'listening');
  const impostorPort = (impostor.address() as AddressInfo).port;
  const seen: [string, boolean][] = [];
  const probeOn = async (podPort: number | undefined, selfCheckId: string) =>
    probe(await standaloneProbes(t, { listeners: () => [listener], podPort, selfCheckId, onPathChecked: (address, ok) => seen.push([address, ok]), timeoutMs: UNHURRIED_MS }), '/readyz');
  t.teardown(() => impostor.close());

  const hijacked = await probeOn(impostorPort, SELF_CHECK_ID);
  t.equal(hijacked.status, 503);
  t.match(hijacked.json, { ready: false, checks: { listeners: [{ address: `127.0.0.1:${impostorPort}`, listener: `127.0.0.1:${listener.port}`, ok: false, error: `127.0.0.1:${impostorPort} is answered by something other than this agent (HTTP 404)` }] } });
  t.same(seen.at(-1), [`127.0.0.1:${impostorPort}`, false], 'reported for the endpoint metric');

  const otherAgent = await probeOn(listener.port, 'another-process');
  t.equal(otherAgent.status, 503, 'another agent\'s answer is not this one\'s');

  // An impostor that sends the self-check header straight back: it sees the nonce, not the answer.
  const echo = createServer((req, res) => res.writeHead(204, { 'x-pod-identity-agent-self-check': req.headers['x-pod-identity-agent-self-check'] ?? '' }).end());
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.teardown(() => echo.close());
  const echoed = await probeOn((echo.address() as AddressInfo).port, SELF_CHECK_ID);
  t.equal(echoed.status, 503, 'an echoed challenge is not an answer');
  t.match(echoed.json, { checks: { listeners: [{ ok: false, error: /is answered by something other than this agent \(HTTP 204\)/ }] } });

  const straight = await probeOn(listener.port, SELF_CHECK_ID);
  t.equal(straight.status, 200, straight.text);
  t.same(seen.at(-1), [`127.0.0.1:${listener.port}`, true]);

  // Nothing at all where pods connect: a port this test holds, refusing every connection.
  const nothing = (await refusingPort(t)).port;
  const gone = await probeOn(nothing, SELF_CHECK_ID);
  t.match(gone.json, { ready: false, checks: { listeners: [{ ok: false, error: new RegExp(`nothing of this agent answers on 127\\.0\\.0\\.1:${nothing} \\(ECONNREFUSED\\): is the node's redirect to port ${listener.port} in place\\?`) }] } });
});

t.test('the agent\'s own readiness checks are not pod requests: no log line, no response counted; the endpoint gauge says 1', async (t) => {
  const h = await startHarness(t);
  const port = h.addresses.credentials[0]?.port;
  for (let i = 0; i < 3; i += 1) t.equal((await probe(h.addresses.probe.port, '/readyz')).status, 200);
  t.equal(h.audit.lines.filter((line) => line.msg === 'credential request').length, 0, 'no credential request logged');
  const text = await h.agent.metrics.registry.metrics();
  t.notMatch(text, /pod_identity_http_response\{/, 'no response counted');
  t.match(text, new RegExp(`pod_identity_endpoint_ready\\{address="127\\.0\\.0\\.1:${port}"\\} 1`));
  t.equal((await h.send({ path: '/', authorization: undefined })).status, 404, 'a pod\'s request to / is still an ordinary 404');
});

t.test('node credentials that cannot be resolved: nothing bound for pods, /readyz says why', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const config = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0'], {}).config!;
  let attempts = 0;
  const audit = createLogAudit();
  const agent = buildAgent(config, {
    logger: createLogger({ level: 'info', destination: audit.sink }),
    kubernetes: null,
    credentialProvider: async () => {
      attempts++;
      throw new Error('Could not load credentials from any providers');
    },
  });
  // listen() waits for the credentials, retrying, and so never resolves here: the probes answer meanwhile.
  const listening = agent.listen();
  const stopped = listening.then(() => 'bound', (error: Error) => error.name);
  // The probe port, from the line logged once probes and metrics are bound, before the wait.
  await eventually(() => audit.lines.some((line) => line.msg === 'probes and metrics bound; the credential listeners follow once the agent can answer'), 'the probes bound');
  const bound = audit.lines.find((line) => line.msg === 'probes and metrics bound; the credential listeners follow once the agent can answer');
  const probePort = Number(String(bound?.probe).split(':')[1]);
  const ready = await probe(probePort, '/readyz');
  t.equal(ready?.status, 503);
  t.match(ready?.json, { ready: false, checks: { listeners: [], nodeCredentials: { ok: false, error: /Could not load credentials from any providers/ } } });
  t.equal((await probe(probePort, '/healthz')).status, 200, 'alive all the same');
  t.ok(attempts >= 1, 'the chain is tried, and retried');
  await agent.close();
  t.equal(await stopped, 'AbortError', 'shutdown ends the wait');
});

t.test('probes ignore an HTTP proxy from the environment', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  // A proxy that refuses everything (a port this test holds), and Node told to use it for its global agent.
  const proxy = (await refusingPort(t)).url;
  const server = await startServerProcess(t, cluster, [], { HTTP_PROXY: proxy, http_proxy: proxy, HTTPS_PROXY: proxy, NODE_USE_ENV_PROXY: '1' });
  const ready = await probe(server.ports.probe, '/readyz');
  t.equal(ready.status, 200, ready.text);
});

t.test('draining: /readyz says so while in-flight requests finish', async (t) => {
  let upstream: Gate | undefined;
  // EKS Auth behind a gate that holds its answers: the request is in flight until the test lets it go.
  const h = await startHarness(t, {
    retry: PATIENT_RETRY,
    beforeAgent: async (cluster) => {
      upstream = await gate(t, cluster.emulator.port);
      return { args: ['--endpoint', upstream.url] };
    },
  });
  const inflight = h.send({ authorization: await h.token() });
  await upstream!.arrived;
  const closing = h.agent.close(UNHURRIED_MS);
  const ready = await probe(h.addresses.probe.port, '/readyz');
  t.equal(ready.status, 503);
  t.match(ready.json, { ready: false, draining: true });
  upstream!.release();
  t.equal((await inflight).status, 200, 'the in-flight request completed');
  await closing;
});
