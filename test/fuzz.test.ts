import t from 'tap';
import { generateRequest, seededRandom, sendRaw } from '../bench/fuzz-requests.ts';
import { startHarness } from './helpers/harness.ts';

const KNOWN = new Set(['400', '403', '404', '405', '408', '431']);

t.test('a seeded fuzz run: every request refused locally with a known status, no upstream call', async (t) => {
  const h = await startHarness(t);
  const port = h.addresses.credentials[0]!.port;
  const random = seededRandom(42);
  const statuses: Record<string, number> = {};
  for (let batch = 0; batch < 40; batch += 1) {
    const outcomes = await Promise.all(Array.from({ length: 50 }, () => sendRaw(port, generateRequest(random, port))));
    for (const outcome of outcomes) statuses[outcome] = (statuses[outcome] ?? 0) + 1;
  }
  t.same(Object.keys(statuses).filter((status) => !KNOWN.has(status)), [], `statuses: ${JSON.stringify(statuses)}`);
  t.equal(h.emulator.callCount, 0, 'no upstream call');
  t.equal((await h.send({ authorization: await h.token() })).status, 200, 'still serving');
});
