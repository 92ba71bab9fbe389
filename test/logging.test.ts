import t from 'tap';
import { createLogger } from '../src/observability/logger.ts';
import { createLogAudit } from './helpers/log-audit.ts';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl';

t.test('redaction covers every shape a secret could be logged in', async (t) => {
  const audit = createLogAudit();
  audit.secrets.add('SECRETKEY').add('SESSIONTOKEN');
  const logger = createLogger({ level: 'trace', destination: audit.sink });
  logger.info({ token: TOKEN }, 'a');
  logger.info({ req: { headers: { authorization: TOKEN } } }, 'b');
  logger.info({ headers: { authorization: TOKEN } }, 'c');
  logger.info({ credentials: { secretAccessKey: 'SECRETKEY', sessionToken: 'SESSIONTOKEN' } }, 'd');
  logger.info({ body: { SecretAccessKey: 'SECRETKEY', Token: 'SESSIONTOKEN' } }, 'e');
  logger.info({ secretAccessKey: 'SECRETKEY', sessionToken: 'SESSIONTOKEN' }, 'f');
  t.equal(audit.lines.length, 6);
  t.same(audit.leaks(), []);
  t.equal(audit.lines[0]?.token, '[REDACTED]');
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
