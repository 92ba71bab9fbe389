import { once } from 'node:events';
import { connect } from 'node:net';
import t from 'tap';
import { startServerProcess } from './helpers/cli-process.ts';
import { eventually } from './helpers/eventually.ts';
import { sendRequest, startTestCluster } from './helpers/harness.ts';
import { gate } from './helpers/local-servers.ts';
import { completeResponses } from './helpers/raw-http.ts';

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
  // EKS Auth behind a gate that holds its answers: the request stays in flight until the test lets it finish.
  const upstream = await gate(t, cluster.emulator.port);
  const server = await startServerProcess(t, cluster, ['--shutdown-timeout', '30s', '--endpoint', upstream.url]);
  const token = await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'app-1' });
  const inflight = sendRequest(server.ports.credentials, { authorization: token });
  await upstream.arrived;
  const signalled = performance.now();
  server.child.kill('SIGTERM');
  await server.logged((line) => line.signal === 'SIGTERM');
  await eventually(() => connectionRefused(server.ports.credentials), 'new connections to be refused');
  // The agent's retry budget (2.5 s) bounds how long the held call may last: refusing takes the
  // agent milliseconds after the signal, so that is ample margin even on a loaded machine.
  upstream.release();
  const reply = await inflight;
  t.equal(reply.status, 200, 'the in-flight request got its credentials');
  t.match(reply.json, { AccessKeyId: /^ASIA/ });
  const { code, at } = await server.exited;
  t.equal(code, 0);
  // Real time, on purpose: "promptly" means not waiting out the 30 s deadline once nothing is in
  // flight. Half of it is a margin no loaded 2-core machine needs (exit takes well under a second).
  t.ok(at - signalled < 15_000, `exited ${Math.round(at - signalled)} ms after SIGTERM, long before the 30 s deadline`);
  const logs = server.logs();
  t.match(logs.find((line) => line.signal === 'SIGTERM'), { msg: /shutting down/, deadline: '30s' });
  t.match(logs.at(-1), { msg: 'stopped' });
});

t.test('SIGINT too; a request stuck past the deadline is cut and the process still exits 0', async (t) => {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.close());
  const server = await startServerProcess(t, cluster, ['--shutdown-timeout', '300ms']);
  // One write: a whole request, then half of another that never ends. The answer to the first shows
  // that the agent has read the lot, so the connection is busy (not idle) when the signal comes.
  const stuck = connect(server.ports.credentials, '127.0.0.1');
  stuck.on('error', () => undefined);
  await once(stuck, 'connect');
  let received = '';
  stuck.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
  });
  const closed = once(stuck, 'close');
  stuck.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  await eventually(() => completeResponses(received) === 1, 'the answer to the whole request');
  const answered = received;
  server.child.kill('SIGINT');
  const { code } = await server.exited;
  t.equal(code, 0);
  await closed;
  const logs = server.logs();
  t.match(logs.find((line) => line.signal === 'SIGINT'), { msg: /shutting down/, deadline: '300ms' });
  t.equal(received, answered, 'the stuck request got no answer: its connection was cut');
  // Cut by the 300 ms drain deadline, or close() would not have finished: once closing, Node no longer
  // enforces its headers timeout, and the keep-alive timer runs 5 s from the first answer, so without
  // the cut the connection would outlive the backstop (2.3 s after the signal), which exits with a
  // warning instead of 'stopped'. A margin of seconds between the three, whatever the load.
  t.notOk(logs.some((line) => line.msg === 'shutdown did not complete in time; exiting'), 'the drain finished by itself, not by the backstop');
  t.match(logs.at(-1), { msg: 'stopped' });
});
