import t from 'tap';
import { fakeClock } from './helpers/clock.ts';
import { sendRequest, startHarness } from './helpers/harness.ts';

t.test('no token or credential in any log line, error body or metric, whatever path a request takes', async (t) => {
  // A clock that stands still: the flood below is limited for certain, however slowly it runs.
  const h = await startHarness(t, { now: fakeClock().now, args: ['--max-client-miss-burst', '8', '--max-client-miss-qps', '1'] });
  const errorBodies: string[] = [];
  const drive = async (authorization: string, localAddress?: string) => {
    const reply = await h.send({ authorization, ...(localAddress === undefined ? {} : { localAddress }) });
    if (reply.status !== 200) errorBodies.push(reply.text);
    return reply;
  };
  const token = await h.token();
  await drive(token); // miss
  await drive(token); // hit
  await drive(await h.token({ serviceAccount: 'nobody' })); // ResourceNotFound, then negative
  await drive(await h.token({ serviceAccount: 'nobody' }));
  for (const fault of [{ kind: 'error', status: 500, type: 'InternalServerException', message: 'boom' }, { kind: 'malformed' }, { kind: 'missing-fields' }, { kind: 'expired-credentials' }, { kind: 'reset' }] as const) {
    h.emulator.inject(fault, 10);
    await drive(await h.token({ podName: `fault-${fault.kind}` }));
    h.emulator.clearFaults();
  }
  await drive(`${token.slice(0, -6)}AAAAAA`); // InvalidTokenException from EKS Auth, echoing nothing
  await drive(token.replace(/\.[^.]+$/, '')); // malformed
  await drive(`${token} ${token}`);
  const limited = [];
  for (let i = 0; i < 12; i += 1) limited.push((await drive(await h.token({ podName: `flood-${i}` }), '127.0.0.9')).status); // limited
  t.equal(limited.filter((status) => status === 429).length, 4, 'the refusal path was taken: 4 of 12 past the burst of 8');
  const metrics = await sendRequest(h.addresses.metrics!.port, { path: '/metrics', host: '127.0.0.1' });

  const secrets = [...h.audit.secrets];
  t.ok(secrets.length > 20, `${secrets.length} tokens and secrets to look for`);
  t.ok(errorBodies.length >= 10, `${errorBodies.length} error bodies`);
  t.same(errorBodies.filter((body) => secrets.some((secret) => body.includes(secret)) || /eyJ[\w-]{8,}\.eyJ/.test(body)), [], 'error bodies');
  t.notOk(secrets.some((secret) => metrics.text.includes(secret)), 'metrics');
  t.same(h.audit.leaks(), [], `${h.audit.lines.length} log lines`);
});
