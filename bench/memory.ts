// Benchmark 4: resident memory with 10,000 cached identities, and the cost of each.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { burst, issueTokens, report, round, rssBytes, scrape, startAgent, startCluster } from './lib.ts';

const IDENTITIES = 10_000;
// New pods arrive a hundred at a time at most on a busy node.
const BATCH = 100;
const MB = 1024 * 1024;

// V8 returns a heap's free pages once it sees allocation stop: its memory reducer looks every 8 s and
// then collects a few times. 2 s after a burst is the transient; 30 s after, what the node keeps.
const TRANSIENT_MS = 2000;
const SETTLED_MS = 30_000;

/** RSS 2 s and 30 s after a burst, read from /proc only: a scrape meanwhile would be allocation of its own. */
async function rssAfterBurst(pid: number): Promise<{ transient: number; settled: number }> {
  await sleep(TRANSIENT_MS);
  const transient = rssBytes(pid);
  await sleep(SETTLED_MS - TRANSIENT_MS);
  return { transient, settled: rssBytes(pid) };
}

export async function memory(): Promise<void> {
  const cluster = await startCluster();
  const tokens = await issueTokens(cluster, IDENTITIES);
  const file = join(tmpdir(), `pia-memory-${process.pid}.json`);
  // As the DaemonSet runs it: the probe file's self-check every 5 s is the quiet agent's own work.
  const probeFile = join(tmpdir(), `pia-memory-probe-${process.pid}`);
  const agent = await startAgent(cluster, ['--max-cache-size', String(IDENTITIES), '--probe-file', probeFile]);
  const pid = agent.child.pid as number;
  let before: { rss: number; heap: number };
  let after: { rss: number; transientRss: number; heap: number };
  let entries = 0;
  try {
    // Warm the code paths with a handful of identities, so the baseline is not a cold process.
    await burst(agent.url, tokens.slice(0, 10), file);
    before = { rss: (await rssAfterBurst(pid)).settled, heap: (await scrape(agent.metricsUrl)).get('nodejs_heap_size_used_bytes') ?? 0 };
    for (let i = 10; i < IDENTITIES; i += BATCH) await burst(agent.url, tokens.slice(i, i + BATCH), file);
    const rss = await rssAfterBurst(pid);
    const samples = await scrape(agent.metricsUrl);
    after = { rss: rss.settled, transientRss: rss.transient, heap: samples.get('nodejs_heap_size_used_bytes') ?? 0 };
    entries = samples.get('pod_identity_cache_entries') ?? 0;
  } finally {
    await Promise.all([agent.stop(), cluster.close(), rm(probeFile, { force: true })]);
  }
  // Per identity actually cached: on a loaded machine some of the bursts' requests can fail.
  const added = Math.max(1, entries - 10);
  const perEntryRss = (after.rss - before.rss) / added;
  const perEntryHeap = (after.heap - before.heap) / added;
  report(
    'memory',
    { identities: entries, rssMB: round(after.rss / MB, 1), transientRssMB: round(after.transientRss / MB, 1), baselineRssMB: round(before.rss / MB, 1), perEntryRssBytes: Math.round(perEntryRss), perEntryHeapBytes: Math.round(perEntryHeap), target: { rssMB: '<= 120' } },
    [
      { measure: 'cached identities', value: entries },
      { measure: 'RSS MB (10 identities, 30 s after)', value: round(before.rss / MB, 1) },
      { measure: `RSS MB (${IDENTITIES} identities, 2 s after the burst)`, value: round(after.transientRss / MB, 1) },
      { measure: `RSS MB (${IDENTITIES} identities, 30 s after: what the node keeps)`, value: round(after.rss / MB, 1) },
      { measure: 'bytes per identity (RSS, 30 s after)', value: Math.round(perEntryRss) },
      { measure: 'bytes per identity (V8 heap)', value: Math.round(perEntryHeap) },
    ],
  );
}
