// `npm run bench [-- name...]`: runs the named benchmarks, or all of them, one after another.
import { coldBurst } from './cold-burst.ts';
import { hitThroughput } from './hit-throughput.ts';
import { memory } from './memory.ts';
import { outage } from './outage.ts';
import { startup } from './startup.ts';

const BENCHMARKS: Record<string, () => Promise<void>> = { 'hit-throughput': hitThroughput, 'cold-burst': coldBurst, outage, memory, startup };

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in BENCHMARKS));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark(s): ${unknown.join(', ')}; choose from ${Object.keys(BENCHMARKS).join(', ')}\n`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHMARKS)) {
  process.stderr.write(`# ${name}\n`);
  await (BENCHMARKS[name] as () => Promise<void>)();
}
