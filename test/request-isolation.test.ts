import t from 'tap';
import type { CredentialCache } from '../src/cache/credential-cache.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { createRequestLog } from '../src/observability/request-log.ts';
import { createCredentialsHandler } from '../src/server/credentials-handler.ts';
import { createHttpServer, listen } from '../src/server/http-server.ts';
import { sendRequest, startHarness } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';

t.test('a bug inside one request is that request\'s 500, and the next is served', async (t) => {
  const h = await startHarness(t);
  const token = await h.token();
  let calls = 0;
  // A cache that throws synchronously on the first look-up and rejects on the first fetch.
  const cache = {
    hit() {
      calls += 1;
      if (calls === 1) throw new TypeError('boom in hit');
      return undefined;
    },
    get: async () => {
      if (calls === 2) throw new RangeError('boom in get');
      const checked = (await import('../src/token/token-checker.ts')).createTokenChecker({ audience: 'pods.eks.amazonaws.com' }).check(token, Date.now());
      return h.agent.cache.get({ key: checked.digest, token: checked.raw, tokenExpiresAt: checked.expiresAt * 1000, identity: undefined });
    },
  } as unknown as CredentialCache;
  const audit = createLogAudit();
  const server = createHttpServer(
    createCredentialsHandler({ bindHosts: ['127.0.0.1'], port: 0, audience: 'pods.eks.amazonaws.com', cache, record: createRequestLog(createMetrics({ defaultMetrics: false }), createLogger({ level: 'info', destination: audit.sink }), { everyRequest: true }).record }),
  );
  const { port } = await listen(server, '127.0.0.1', 0);
  t.teardown(() => server.close());

  const first = await sendRequest(port, { authorization: token });
  t.equal(first.status, 500);
  t.same(first.json, { Code: 'InternalError', Message: 'the agent failed to answer' }, 'no internal detail leaks to the pod');
  const second = await sendRequest(port, { authorization: token });
  t.equal(second.status, 500);
  const third = await sendRequest(port, { authorization: token });
  t.equal(third.status, 200, 'the process and the server carry on');
  t.match(audit.lines.filter((line) => line.msg?.toString().startsWith('credential request')), [
    { level: 'error', status: 500, code: 'InternalError', err: { type: 'TypeError', message: 'boom in hit', stack: /TypeError/ } },
    { level: 'error', status: 500, err: { type: 'RangeError' } },
    { level: 'info', status: 200 },
  ]);
});
