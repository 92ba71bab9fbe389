// Benchmark 2: 1,000 concurrent requests over 100 distinct, uncached tokens, 50 ms upstream latency.
// The EKS Auth emulator runs in a process of its own (bench/emulator-process.ts), the agent in
// another as the image runs it, the burst client in a third: no two share an event loop.
// Baselines from the same run: the upstream latency the agent itself observed (its metrics), the
// configured 50 ms, and a bare server that answers every request after exactly 50 ms under the same
// burst (the ideal agent, whose every request costs one upstream round trip and nothing else).
// Server CPU is read from /proc/PID/stat over each burst, its connections' setup excluded; the same
// burst once more, all hits, measures what the 1,000 answers cost, so that the difference is the misses'.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BurstResult, burstWithHandshake, cpuSeconds, report, round, scrape, startAgent, startBareServer, startEmulatorProcess } from './lib.ts';

const REQUESTS = 1000;
const IDENTITIES = 100;
const UPSTREAM_LATENCY_MS = 50;


export async function coldBurst(): Promise<void> {
  // Twice the identities: the second hundred makes a second cold burst on the same, now warmed-up agent.
  const emulator = await startEmulatorProcess(2 * IDENTITIES);
  // BENCH_COLD_BURST_AGENT_ARGS (e.g. "-v warn"): extra agent flags, to measure what a setting costs here.
  const agent = await startAgent(emulator, (process.env.BENCH_COLD_BURST_AGENT_ARGS ?? '').split(' ').filter((arg) => arg !== ''));
  const ideal = await startBareServer(1200, UPSTREAM_LATENCY_MS);
  const file = join(tmpdir(), `pia-burst-${process.pid}.json`);
  // Interleaved, so that each token's requests arrive spread through the burst.
  const load = Array.from({ length: REQUESTS }, (_, i) => emulator.tokens[i % IDENTITIES] as string);
  const fresh = Array.from({ length: REQUESTS }, (_, i) => emulator.tokens[IDENTITIES + (i % IDENTITIES)] as string);
  const pid = agent.child.pid!;
  let baseline: BurstResult;
  let cold: BurstResult;
  let warm: BurstResult;
  let again: BurstResult;
  let againCpu: number;
  let againStats: Awaited<ReturnType<typeof emulator.stats>>;
  let coldCpu: number;
  let warmCpu: number;
  let idealCpu: number;
  let emulatorCpu: number;
  let calls: number;
  let emulatorAfter: Awaited<ReturnType<typeof emulator.stats>>;
  let burstStart: number;
  let samples: Map<string, number>;
  try {
    let before = 0;
    baseline = await burstWithHandshake(ideal.url, load, file, () => (before = cpuSeconds(ideal.child.pid!)));
    idealCpu = cpuSeconds(ideal.child.pid!) - before;
    await emulator.setLatency(UPSTREAM_LATENCY_MS);
    const emulatorBefore = await emulator.stats();
    burstStart = 0;
    cold = await burstWithHandshake(agent.url, load, file, () => {
      before = cpuSeconds(pid);
      burstStart = Date.now();
    });
    coldCpu = cpuSeconds(pid) - before;
    emulatorAfter = await emulator.stats();
    calls = emulatorAfter.calls - emulatorBefore.calls;
    emulatorCpu = emulatorAfter.cpuSeconds - emulatorBefore.cpuSeconds;
    samples = await scrape(agent.metricsUrl);
    warm = await burstWithHandshake(agent.url, load, file, () => (before = cpuSeconds(pid)));
    warmCpu = cpuSeconds(pid) - before;
    await emulator.stats();
    again = await burstWithHandshake(agent.url, fresh, file, () => (before = cpuSeconds(pid)));
    againCpu = cpuSeconds(pid) - before;
    againStats = await emulator.stats();
  } finally {
    await Promise.all([agent.stop(), ideal.stop(), emulator.stop()]);
  }
  const sample = (name: string) => samples.get(name) ?? 0;
  const upstreamMeanMs = (sample('pod_identity_upstream_request_duration_seconds_sum{code="200"}') / sample('pod_identity_upstream_request_duration_seconds_count{code="200"}')) * 1000;
  const misses = sample('pod_identity_cache_lookups_total{outcome="miss"}');
  const retries = [...samples].filter(([name]) => name.startsWith('pod_identity_upstream_retries_total')).reduce((total, [, n]) => total + n, 0);
  // The agent's own view of each request, arrival to answer: what the client adds on top is queueing outside it.
  const agentMeanMs = (outcome: string) => (sample(`pod_identity_request_duration_seconds_sum{outcome="${outcome}"}`) / sample(`pod_identity_request_duration_seconds_count{outcome="${outcome}"}`)) * 1000;
  const missCpuMs = ((coldCpu - warmCpu) / IDENTITIES) * 1000;
  report(
    'cold-burst',
    {
      requests: REQUESTS,
      identities: IDENTITIES,
      upstreamLatencyMs: UPSTREAM_LATENCY_MS,
      upstreamCalls: calls,
      exchanges: misses,
      retries,
      retriesByCode: Object.fromEntries([...samples].filter(([name]) => name.startsWith('pod_identity_upstream_retries_total')).map(([name, n]) => [/code="([^"]*)"/.exec(name)?.[1] ?? name, n])),
      upstreamAttemptsByCode: Object.fromEntries([...samples].filter(([name]) => name.startsWith('pod_identity_upstream_request_duration_seconds_count')).map(([name, n]) => [/code="([^"]*)"/.exec(name)?.[1] ?? name, n])),
      statuses: cold.statuses,
      p50Ms: round(cold.p50Ms),
      p99Ms: round(cold.p99Ms),
      maxMs: round(cold.maxMs),
      upstreamMeanAsSeenByAgentMs: round(upstreamMeanMs),
      agentMissMeanMs: round(agentMeanMs('miss')),
      agentCoalescedMeanMs: round(agentMeanMs('coalesced')),
      baselineP99Ms: round(baseline.p99Ms),
      p99OverObservedUpstream: round(cold.p99Ms / upstreamMeanMs),
      p99OverConfiguredUpstream: round(cold.p99Ms / UPSTREAM_LATENCY_MS),
      p99OverBaselineP99: round(cold.p99Ms / baseline.p99Ms),
      agentCpuMs: { cold: round(coldCpu * 1000), warm: round(warmCpu * 1000), perMiss: round(missCpuMs) },
      idealCpuMs: round(idealCpu * 1000),
      emulatorCpuMs: round(emulatorCpu * 1000),
      clientCpuMs: { ideal: round(baseline.clientCpuSeconds * 1000), cold: round(cold.clientCpuSeconds * 1000), warm: round(warm.clientCpuSeconds * 1000) },
      warmP99Ms: round(warm.p99Ms),
      // The same burst over 100 other identities on the same agent: its code already run once (JIT, lazy compilation).
      secondColdBurst: { p99Ms: round(again.p99Ms), statuses: again.statuses, upstreamCalls: againStats.calls - emulatorAfter.calls, agentCpuMs: round(againCpu * 1000), perMissCpuMs: round(((againCpu - warmCpu) / IDENTITIES) * 1000), emulatorHandledP50Ms: againStats.handledP50Ms },
      emulatorHandledMs: { p50: round(emulatorAfter.handledP50Ms), p99: round(emulatorAfter.handledP99Ms) },
      // Arrivals at the emulator, ms after the burst was let go (its connections already open).
      emulatorArrivalsMs: { first: emulatorAfter.firstArrival - burstStart, last: emulatorAfter.lastArrival - burstStart },
      targets: { upstreamCalls: IDENTITIES, p99OverObservedUpstream: '<= 2' },
    },
    [
      { measure: 'exchanges started (misses)', agent: misses, 'ideal (bare, 50 ms)': '', target: IDENTITIES },
      { measure: 'upstream attempts (with retries)', agent: `${calls} (${retries} retries)`, 'ideal (bare, 50 ms)': '', target: IDENTITIES },
      { measure: 'answered 200', agent: cold.statuses['200'] ?? 0, 'ideal (bare, 50 ms)': baseline.statuses['200'] ?? 0, target: REQUESTS },
      { measure: 'p50 ms', agent: round(cold.p50Ms), 'ideal (bare, 50 ms)': round(baseline.p50Ms), target: '' },
      { measure: 'p99 ms', agent: round(cold.p99Ms), 'ideal (bare, 50 ms)': round(baseline.p99Ms), target: `<= ${round(2 * upstreamMeanMs)} (2x observed)` },
      { measure: 'upstream call as the agent saw it, mean ms', agent: round(upstreamMeanMs), 'ideal (bare, 50 ms)': UPSTREAM_LATENCY_MS, target: '' },
      { measure: 'upstream call inside the emulator, p50 / p99 ms', agent: `${round(emulatorAfter.handledP50Ms)} / ${round(emulatorAfter.handledP99Ms)}`, 'ideal (bare, 50 ms)': '', target: '' },
      { measure: 'p99 / observed upstream', agent: round(cold.p99Ms / upstreamMeanMs), 'ideal (bare, 50 ms)': '', target: '<= 2' },
      { measure: 'p99 / configured 50 ms', agent: round(cold.p99Ms / UPSTREAM_LATENCY_MS), 'ideal (bare, 50 ms)': round(baseline.p99Ms / UPSTREAM_LATENCY_MS), target: '' },
      { measure: 'server CPU over the burst, ms', agent: round(coldCpu * 1000), 'ideal (bare, 50 ms)': round(idealCpu * 1000), target: '' },
      { measure: 'server CPU, same burst all hits, ms', agent: round(warmCpu * 1000), 'ideal (bare, 50 ms)': '', target: '' },
      { measure: 'server CPU per miss (cold - warm), ms', agent: round(missCpuMs), 'ideal (bare, 50 ms)': '', target: '' },
      { measure: 'second cold burst, 100 other identities: p99 ms, calls', agent: `${round(again.p99Ms)}, ${againStats.calls - emulatorAfter.calls}`, 'ideal (bare, 50 ms)': '', target: '' },
      { measure: 'second cold burst: server CPU ms, per miss', agent: `${round(againCpu * 1000)}, ${round(((againCpu - warmCpu) / IDENTITIES) * 1000)}`, 'ideal (bare, 50 ms)': '', target: '' },
      { measure: 'emulator CPU / burst client CPU, ms', agent: `${round(emulatorCpu * 1000)} / ${round(cold.clientCpuSeconds * 1000)}`, 'ideal (bare, 50 ms)': `- / ${round(baseline.clientCpuSeconds * 1000)}`, target: '' },
    ],
  );
}
