// The request-duration histogram tallies hits apart from prom-client (src/observability/request-duration.ts):
// what Prometheus reads must be exactly what prom-client's own Histogram would have exported.
import { Histogram, Registry } from 'prom-client';
import t from 'tap';
import { RequestDurationHistogram } from '../src/observability/request-duration.ts';

const BUCKETS = [0.00005, 0.0001, 0.001, 1];
// Below the first bound, on bounds (le is inclusive), between, and past the last (+Inf only).
const HITS = [0.00001, 0.00005, 0.00007, 0.0001, 0.5, 1, 7];
const MISSES = [0.02, 0.00009];

function pair() {
  const tallied = new Registry();
  const reference = new Registry();
  const config = { name: 'd_seconds', help: 'h', labelNames: ['outcome'] as const, buckets: BUCKETS };
  return {
    tallied,
    reference,
    ours: new RequestDurationHistogram({ ...config, registers: [tallied] }),
    theirs: new Histogram({ ...config, buckets: [...BUCKETS], registers: [reference] }),
  };
}

t.test('hits and other outcomes read exactly as prom-client exports them', async (t) => {
  const { tallied, reference, ours, theirs } = pair();
  theirs.zero({ outcome: 'hit' });
  t.equal(await tallied.metrics(), await reference.metrics(), 'before any request: the hit series at zero');
  for (const seconds of HITS) {
    ours.observeHit(seconds);
    theirs.observe({ outcome: 'hit' }, seconds);
  }
  for (const seconds of MISSES) {
    ours.observe({ outcome: 'miss' }, seconds);
    theirs.observe({ outcome: 'miss' }, seconds);
  }
  const text = await tallied.metrics();
  t.equal(text, await reference.metrics());
  t.match(text, /d_seconds_bucket\{le="0.00005",outcome="hit"\} 2\n/, 'le is inclusive');
  t.match(text, /d_seconds_bucket\{le="\+Inf",outcome="hit"\} 7\n/);
  t.match(text, /d_seconds_count\{outcome="hit"\} 7\n/);
  t.equal(await tallied.metrics(), text, 'reading twice adds nothing');
});

t.test('reset() clears the tallied hits too', async (t) => {
  const { tallied, reference, ours, theirs } = pair();
  ours.observeHit(0.5);
  ours.reset();
  theirs.zero({ outcome: 'hit' });
  t.equal(await tallied.metrics(), await reference.metrics());
});
