// The retry layer's decisions on a fake clock: how many attempts, and when the budget stops them.
// Each attempt moves the clock as far as the test says it took, so nothing depends on how fast a
// loaded machine runs (the backoff's own sleeps are real, and made zero or short here).
import t, { type Test } from 'tap';
import { AgentError, agentError } from '../src/errors.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from '../src/upstream/retry.ts';
import { fakeClock } from './helpers/clock.ts';

const unavailable = () => agentError('UpstreamUnavailable', 'EKS Auth could not be reached (ECONNRESET)');
const POLICY: RetryPolicy = DEFAULT_RETRY_POLICY;

/** An attempt's timer (AbortSignal.timeout) does not hold the process open, the agent's servers do: here, this. */
function holdOpen(t: Test): void {
  const timer = setInterval(() => undefined, 1000);
  t.teardown(() => clearInterval(timer));
}

/** Runs withRetry with attempts that each take `tookMs` on the clock and fail as `outcome` says. */
async function run(policy: RetryPolicy, outcome: (n: number) => 'fail' | 'ok' | 'refuse', tookMs: number, random = () => 0) {
  const clock = fakeClock(0);
  const started: number[] = [];
  const retried: [string, number][] = [];
  const result = await withRetry(
    policy,
    async () => {
      started.push(clock.now());
      clock.advance(tookMs);
      const verdict = outcome(started.length);
      if (verdict === 'ok') return 'credentials';
      throw verdict === 'fail' ? unavailable() : new AgentError('AccessDeniedException', 400, 'no', { retryable: false });
    },
    { now: clock.now, random, onRetry: (error: AgentError, n) => retried.push([error.code, n]) },
  ).catch((error: unknown) => error as AgentError);
  return { result, started, retried };
}

t.test('a retryable failure is tried the policy\'s attempts, then its error stands', async (t) => {
  const { result, started, retried } = await run(POLICY, () => 'fail', 10);
  t.match(result, { code: 'UpstreamUnavailable' });
  t.equal(started.length, POLICY.maxAttempts);
  t.same(retried, [['UpstreamUnavailable', 1], ['UpstreamUnavailable', 2], ['UpstreamUnavailable', 3]]);
});

t.test('a success after failures is the answer; a verdict is never retried', async (t) => {
  const recovered = await run(POLICY, (n) => (n < 3 ? 'fail' : 'ok'), 10);
  t.equal(recovered.result, 'credentials');
  t.equal(recovered.started.length, 3);
  const refused = await run(POLICY, () => 'refuse', 10);
  t.match(refused.result, { code: 'AccessDeniedException' });
  t.equal(refused.started.length, 1, 'one attempt for a non-retryable answer');
});

t.test('no attempt starts past the budget: slow failures use it up before the attempts run out', async (t) => {
  // Each failing attempt takes 1 s of a 2.5 s budget: after the third, nothing is left to start with.
  const { result, started } = await run(POLICY, () => 'fail', 1000);
  t.match(result, { code: 'UpstreamUnavailable' });
  t.same(started, [0, 1000, 2000], 'three attempts, the last begun inside the budget');
});

t.test('an attempt is not started without 50 ms to run, counting the backoff before it', async (t) => {
  const policy = { ...POLICY, budgetMs: 1000 };
  // 860 ms per attempt leaves 140 ms; the backoff before attempt 2 is random() x min(400, 50 x 2) = 100 ms at most.
  const withFullBackoff = await run(policy, () => 'fail', 860, () => 1);
  t.equal(withFullBackoff.started.length, 1, '140 - 100 = 40 ms left: not worth an attempt');
  const withHalfBackoff = await run(policy, () => 'fail', 860, () => 0.5);
  t.same(withHalfBackoff.started, [0, 860], '140 - 50 = 90 ms left: one more attempt');
});

t.test('an attempt that does not answer is cut at attemptTimeoutMs and retried as UpstreamUnavailable', async (t) => {
  holdOpen(t);
  const policy = { ...POLICY, attemptTimeoutMs: 20, budgetMs: 60_000 };
  const errors: AgentError[] = [];
  let attempts = 0;
  const result = await withRetry(
    policy,
    (signal) => {
      attempts += 1;
      // The first attempt never settles by itself: only the attempt's own signal can end it.
      if (attempts === 1) return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
      return Promise.resolve('credentials');
    },
    { random: () => 0, onRetry: (error) => errors.push(error) },
  );
  t.equal(result, 'credentials');
  t.equal(attempts, 2);
  t.match(errors, [{ code: 'UpstreamUnavailable', message: 'EKS Auth did not answer in time' }]);
});

t.test('the last attempt is cut at the end of the budget, not given its full attemptTimeoutMs', async (t) => {
  holdOpen(t);
  const clock = fakeClock(0);
  // Two attempts at most: the second is the one whose time limit is in question.
  const policy = { ...POLICY, maxAttempts: 2, attemptTimeoutMs: 10 * 60_000, budgetMs: 1000 };
  let attempts = 0;
  const result = await withRetry(
    policy,
    (signal) => {
      attempts += 1;
      if (attempts === 1) {
        // A quick failure that leaves 100 ms of the budget on the clock.
        clock.advance(900);
        return Promise.reject(unavailable());
      }
      // Never settles by itself: were it given its 10 minutes, the test would time out.
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    },
    { now: clock.now, random: () => 0 },
  ).catch((error: unknown) => error as AgentError);
  t.equal(attempts, 2);
  t.match(result, { code: 'UpstreamUnavailable', message: 'EKS Auth did not answer in time' });
});
