import type { AddressInfo } from 'node:net';
import t from 'tap';
import { buildAgent } from '../src/agent.ts';
import { parseServerArgs } from '../src/config/index.ts';
import { monitorEventLoop } from '../src/observability/event-loop.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createHttpServer, listen } from '../src/server/http-server.ts';
import { createProbeHandler } from '../src/server/probe-handler.ts';
import { startServerProcess } from './helpers/cli-process.ts';
import { freePort, sendRequest, startHarness, startTestCluster } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';

const probe = (port: number, path: string) => sendRequest(port, { path, host: '127.0.0.1' });

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

t.test('a listener that does not answer makes /readyz fail, naming it', async (t) => {
  const h = await startHarness(t);
  const good = h.addresses.credentials[0] as AddressInfo;
  const dead: AddressInfo = { address: '127.0.0.1', family: 'IPv4', port: await freePort() };
  const eventLoop = monitorEventLoop();
  const server = createHttpServer(createProbeHandler({ listeners: () => [good, dead], nodeCredentials: async () => ({ accessKeyId: 'a', secretAccessKey: 'b' }), eventLoop, draining: () => false }));
  const address = await listen(server, '127.0.0.1', 0);
  t.teardown(() => {
    server.close();
    eventLoop.close();
  });
  const started = performance.now();
  const ready = await probe(address.port, '/readyz');
  t.ok(performance.now() - started < 1000, 'answered within 1 s');
  t.equal(ready.status, 503);
  t.match(ready.json, { ready: false, checks: { listeners: [{ ok: true }, { address: `127.0.0.1:${dead.port}`, ok: false, error: /ECONNREFUSED/ }] } });
});

t.test('node credentials that cannot be resolved make /readyz fail, saying why', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const config = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0'], {}).config!;
  const agent = buildAgent(config, {
    logger: createLogger({ level: 'info', destination: createLogAudit().sink }),
    kubernetes: null,
    credentialProvider: async () => {
      throw new Error('Could not load credentials from any providers');
    },
  });
  const addresses = await agent.listen();
  t.teardown(() => agent.close());
  const ready = await probe(addresses.probe.port, '/readyz');
  t.equal(ready.status, 503);
  t.match(ready.json, { ready: false, checks: { listeners: [{ ok: true }], nodeCredentials: { ok: false, error: /Could not load credentials from any providers/ } } });
  t.equal((await probe(addresses.probe.port, '/healthz')).status, 200, 'alive all the same');
});

t.test('probes ignore an HTTP proxy from the environment', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  // A proxy that refuses everything, and Node told to use it for its global agent.
  const proxy = `http://127.0.0.1:${await freePort()}`;
  const server = await startServerProcess(t, cluster, [], { HTTP_PROXY: proxy, http_proxy: proxy, HTTPS_PROXY: proxy, NODE_USE_ENV_PROXY: '1' });
  const ready = await probe(server.ports.probe, '/readyz');
  t.equal(ready.status, 200, ready.text);
});

t.test('draining: /readyz says so while in-flight requests finish', async (t) => {
  const h = await startHarness(t);
  h.emulator.inject({ kind: 'latency', ms: 300 });
  const inflight = h.send({ authorization: await h.token() });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const closing = h.agent.close(5000);
  const ready = await probe(h.addresses.probe.port, '/readyz');
  t.equal(ready.status, 503);
  t.match(ready.json, { ready: false, draining: true });
  t.equal((await inflight).status, 200, 'the in-flight request completed');
  await closing;
});
