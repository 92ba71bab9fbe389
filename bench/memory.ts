// Benchmark 4: resident memory with 10,000 cached identities, and the cost of each.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { burst, issueTokens, report, round, rssBytes, scrape, startAgent, startCluster } from './lib.ts';

const IDENTITIES = 10_000;
// New pods arrive a hundred at a time at most on a busy node.
const BATCH = 100;
const MB = 1024 * 1024;

const settle = () => new Promise((resolve) => setTimeout(resolve, 2000));

export async function memory(): Promise<void> {
  const cluster = await startCluster();
  const tokens = await issueTokens(cluster, IDENTITIES);
  const agent = await startAgent(cluster, ['--max-cache-size', String(IDENTITIES)]);
  const file = join(tmpdir(), `pia-memory-${process.pid}.json`);
  const pid = agent.child.pid as number;
  let before: { rss: number; heap: number };
  let after: { rss: number; heap: number };
  let entries = 0;
  try {
    // Warm the code paths with a handful of identities, so the baseline is not a cold process.
    await burst(agent.url, tokens.slice(0, 10), file);
    await settle();
    before = { rss: rssBytes(pid), heap: (await scrape(agent.metricsUrl)).get('nodejs_heap_size_used_bytes') ?? 0 };
    for (let i = 10; i < IDENTITIES; i += BATCH) await burst(agent.url, tokens.slice(i, i + BATCH), file);
    await settle();
    const samples = await scrape(agent.metricsUrl);
    after = { rss: rssBytes(pid), heap: samples.get('nodejs_heap_size_used_bytes') ?? 0 };
    entries = samples.get('pod_identity_cache_entries') ?? 0;
  } finally {
    await Promise.all([agent.stop(), cluster.close()]);
  }
  // Per identity actually cached: on a loaded machine some of the bursts' requests can fail.
  const added = Math.max(1, entries - 10);
  const perEntryRss = (after.rss - before.rss) / added;
  const perEntryHeap = (after.heap - before.heap) / added;
  report(
    'memory',
    { identities: entries, rssMB: round(after.rss / MB, 1), baselineRssMB: round(before.rss / MB, 1), perEntryRssBytes: Math.round(perEntryRss), perEntryHeapBytes: Math.round(perEntryHeap), target: { rssMB: '<= 120' } },
    [
      { measure: 'cached identities', value: entries },
      { measure: 'RSS MB (10 identities)', value: round(before.rss / MB, 1) },
      { measure: `RSS MB (${IDENTITIES} identities)`, value: round(after.rss / MB, 1) },
      { measure: 'bytes per identity (RSS)', value: Math.round(perEntryRss) },
      { measure: 'bytes per identity (V8 heap)', value: Math.round(perEntryHeap) },
    ],
  );
}
