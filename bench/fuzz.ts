// `npm run fuzz [-- COUNT [SEED]]`: seeded hostile requests (default 20,000) against the agent as
// deployed (compiled CLI, own process); reports counts by status, upstream calls (must be 0) and the
// agent's resident memory before and after.
import { generateRequest, seededRandom, sendRaw } from './fuzz-requests.ts';
import { report, rssBytes, startAgent, startCluster } from './lib.ts';

const [count = 20_000, seed = 1] = process.argv.slice(2).map(Number);
const CONCURRENCY = 50;

const cluster = await startCluster();
const agent = await startAgent(cluster);
const port = Number(new URL(agent.url).port);
const pid = agent.child.pid as number;
const random = seededRandom(seed);
const statuses: Record<string, number> = {};
const rssBefore = rssBytes(pid);
let next = 0;
const started = performance.now();
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < count) {
      next += 1;
      const outcome = await sendRaw(port, generateRequest(random, port));
      statuses[outcome] = (statuses[outcome] ?? 0) + 1;
    }
  }),
);
const seconds = (performance.now() - started) / 1000;
const rssAfter = rssBytes(pid);
const alive = agent.child.exitCode === null;
await agent.stop();
await cluster.close();
report(
  'fuzz',
  { requests: count, seed, seconds: Math.round(seconds), statuses, upstreamCalls: cluster.emulator.callCount, agentAlive: alive, rssMB: { before: Math.round(rssBefore / 1048576), after: Math.round(rssAfter / 1048576) } },
  Object.entries(statuses).sort().map(([status, n]) => ({ status, requests: n })),
);
if (cluster.emulator.callCount !== 0 || !alive) process.exitCode = 1;
