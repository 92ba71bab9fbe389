// Where the V8 heap goes at 10,000 identities: the agent as bench/memory.ts runs it, one heap
// snapshot before and one after (SIGUSR2, --heapsnapshot-signal), summed by constructor and by
// duplicated string. Not part of `npm run bench`: `node bench/heap-profile.ts [IDENTITIES]` after a build.
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { burst, issueTokens, startAgent, startCluster } from './lib.ts';

const IDENTITIES = Number(process.argv[2] ?? 10_000);
const BATCH = 100;

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size summed per "type:name" (strings by length bucket), plus how many strings over 200 chars occur more than once. */
function summarise(file: string): { byName: Map<string, { count: number; bytes: number }>; duplicates: { length: number; copies: number }[]; total: number } {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const byName = new Map<string, { count: number; bytes: number }>();
  const strings = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]!]!;
    const name = snap.strings[snap.nodes[i + iName]!]!;
    const size = snap.nodes[i + iSize]!;
    total += size;
    const key = type === 'string' || type === 'concatenated string' || type === 'sliced string' ? `${type}:len~${Math.min(10 ** Math.ceil(Math.log10(name.length + 1)), 100000)}` : `${type}:${name.slice(0, 60)}`;
    const slot = byName.get(key) ?? { count: 0, bytes: 0 };
    slot.count += 1;
    slot.bytes += size;
    byName.set(key, slot);
    if (type === 'string' && name.length > 200) strings.set(name, (strings.get(name) ?? 0) + 1);
  }
  const dup = new Map<number, number>();
  for (const [s, n] of strings) if (n > 1) dup.set(s.length, (dup.get(s.length) ?? 0) + n);
  return { byName, duplicates: [...dup].map(([length, copies]) => ({ length, copies })).sort((a, b) => b.copies - a.copies).slice(0, 10), total };
}

async function snapshot(pid: number, dir: string, count: number): Promise<string> {
  process.kill(pid, 'SIGUSR2');
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const files = readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot'));
    // Written in one go; a second look with the same size means it is done.
    if (files.length >= count) {
      const file = join(dir, files.sort()[count - 1]!);
      const size = readFileSync(file).length;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (readFileSync(file).length === size && size > 0) return file;
    }
  }
}

const dir = await mkdtemp(join(tmpdir(), 'pia-heap-'));
process.env.BENCH_SERVER_NODE_OPTIONS = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir} ${process.env.BENCH_SERVER_NODE_OPTIONS ?? ''}`;
const cluster = await startCluster();
const tokens = await issueTokens(cluster, IDENTITIES);
const agent = await startAgent(cluster, ['--max-cache-size', String(IDENTITIES), ...process.argv.slice(3)]);
const file = join(dir, 'tokens.json');
const pid = agent.child.pid as number;
try {
  await burst(agent.url, tokens.slice(0, 10), file);
  const before = summarise(await snapshot(pid, dir, 1));
  for (let i = 10; i < IDENTITIES; i += BATCH) await burst(agent.url, tokens.slice(i, i + BATCH), file);
  const after = summarise(await snapshot(pid, dir, 2));
  const n = IDENTITIES - 10;
  const rows = [...after.byName].map(([key, a]) => {
    const b = before.byName.get(key) ?? { count: 0, bytes: 0 };
    return { key, perIdentityCount: Math.round(((a.count - b.count) / n) * 100) / 100, perIdentityBytes: Math.round((a.bytes - b.bytes) / n) };
  });
  rows.sort((x, y) => y.perIdentityBytes - x.perIdentityBytes);
  console.log(`total self size: before ${before.total}, after ${after.total}, per identity ${Math.round((after.total - before.total) / n)} bytes`);
  console.table(rows.filter((r) => Math.abs(r.perIdentityBytes) >= 8).slice(0, 40));
  console.log('strings over 200 chars held more than once (after):');
  console.table(after.duplicates);
} finally {
  await Promise.all([agent.stop(), cluster.close()]);
}
