import { connect } from 'node:net';
import t from 'tap';
import { startServerProcess } from './helpers/cli-process.ts';
import { sendRequest, startTestCluster } from './helpers/harness.ts';

function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

t.test('SIGTERM: in-flight request completes, new connections are refused, exit 0 promptly', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const server = await startServerProcess(t, cluster, ['--shutdown-timeout', '5s']);
  const token = await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'app-1' });
  cluster.emulator.inject({ kind: 'latency', ms: 400 });
  const inflight = sendRequest(server.ports.credentials, { authorization: token });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const signalled = performance.now();
  server.child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.ok(await connectionRefused(server.ports.credentials), 'a new connection is refused');
  const reply = await inflight;
  t.equal(reply.status, 200, 'the in-flight request got its credentials');
  t.match(reply.json, { AccessKeyId: /^ASIA/ });
  const { code, at } = await server.exited;
  t.equal(code, 0);
  t.ok(at - signalled < 2000, `exited ${Math.round(at - signalled)} ms after SIGTERM, well inside the deadline`);
  const logs = server.output().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  t.match(logs.find((line) => line.signal === 'SIGTERM'), { msg: /shutting down/, deadline: '5s' });
  t.match(logs.at(-1), { msg: 'stopped' });
});

t.test('SIGINT too; a request stuck past the deadline is cut and the process still exits 0', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const server = await startServerProcess(t, cluster, ['--shutdown-timeout', '300ms']);
  // A client that sends half a request and never the rest keeps its connection busy.
  const stuck = connect(server.ports.credentials, '127.0.0.1');
  stuck.on('error', () => undefined);
  await new Promise((resolve) => stuck.on('connect', resolve));
  stuck.write('GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  const signalled = performance.now();
  server.child.kill('SIGINT');
  const { code, at } = await server.exited;
  t.equal(code, 0);
  t.ok(at - signalled < 2000, `exited ${Math.round(at - signalled)} ms after SIGINT with a 300 ms deadline`);
  stuck.destroy();
});
