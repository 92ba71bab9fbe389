import { readFile } from 'node:fs/promises';
import t from 'tap';
import { ERROR_CATALOG, UPSTREAM_ERRORS, agentError, type AgentErrorCode } from '../src/errors.ts';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');

t.test('every Code the agent can answer is documented in the README with its status', async (t) => {
  for (const [code, { status }] of Object.entries({ ...ERROR_CATALOG, ...UPSTREAM_ERRORS })) {
    t.match(readme, new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`), `${code} (${status}) is in the README's table`);
  }
});

t.test('agentError takes status and retryability from the catalog', async (t) => {
  for (const code of Object.keys(ERROR_CATALOG) as AgentErrorCode[]) {
    const error = agentError(code, 'message');
    t.equal(error.status, ERROR_CATALOG[code].status);
    t.equal(error.retryable, ERROR_CATALOG[code].retryable);
    t.same(error.toJSON(), { Code: code, Message: 'message' });
  }
});
