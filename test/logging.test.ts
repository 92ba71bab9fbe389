import t from 'tap';
import { REDACTED, createLogger, scrub } from '../src/observability/logger.ts';
import { createLogAudit } from './helpers/log-audit.ts';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl';

t.test('redaction covers every shape a secret could be logged in', async (t) => {
  const audit = createLogAudit();
  audit.secrets.add('SECRETKEY').add('SESSIONTOKEN');
  const logger = createLogger({ level: 'trace', destination: audit.sink });
  logger.info({ token: TOKEN }, 'a');
  logger.info({ req: { headers: { authorization: TOKEN, Authorization: TOKEN } } }, 'b');
  logger.info({ upstream: { request: { headers: { 'X-Amz-Security-Token': 'SESSIONTOKEN' } } } }, 'c');
  logger.info({ credentials: { secretAccessKey: 'SECRETKEY', sessionToken: 'SESSIONTOKEN' } }, 'd');
  logger.info({ body: { SecretAccessKey: 'SECRETKEY', Token: 'SESSIONTOKEN' } }, 'e');
  logger.info({ list: [{ secretAccessKey: 'SECRETKEY' }, { nested: [{ sessionToken: 'SESSIONTOKEN' }] }] }, 'f');
  logger.error({ err: Object.assign(new Error('upstream failed'), { token: TOKEN }) }, 'g');
  logger.child({ token: TOKEN }).info('h');
  t.equal(audit.lines.length, 8);
  t.same(audit.leaks(), []);
  t.equal(audit.lines[0]?.token, REDACTED);
  t.match(audit.lines[6], { err: { message: 'upstream failed', token: REDACTED } });
});

t.test('scrub copies on write and leaves clean objects untouched', async (t) => {
  const clean = { namespace: 'default', status: 200, nested: { a: [1, 2] } };
  t.equal(scrub(clean), clean, 'the same object: nothing was copied');
  const dirty = { a: 1, inner: { token: 'x', keep: 'y' } };
  t.same(scrub(dirty), { a: 1, inner: { token: REDACTED, keep: 'y' } });
  t.equal(dirty.inner.token, 'x', 'the caller\'s object is not modified');
  let deep: Record<string, unknown> = { token: 'x' };
  for (let i = 0; i < 10; i += 1) deep = { deeper: deep };
  t.notMatch(JSON.stringify(scrub(deep)), /"x"/, 'too deep to inspect is not logged');
});

t.test('the audit catches a leak, so the suite-wide check can fail', async (t) => {
  const audit = createLogAudit();
  audit.secrets.add('SECRETKEY');
  const logger = createLogger({ level: 'info', destination: audit.sink });
  logger.info(`oops ${TOKEN}`);
  logger.info({ note: 'SECRETKEY' }, 'oops');
  t.equal(audit.leaks().length, 2);
  t.throws(() => audit.assertClean(), /2 of 2 log lines carry a token or secret/);
});
