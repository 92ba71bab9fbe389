/**
 * A clock that moves only when the test says so, for the agent's `now` (buildAgent, CredentialCache,
 * MissLimiter, withRetry): what it decides then depends on the test's steps, never on how fast a
 * loaded machine ran them.
 */
export interface FakeClock {
  readonly now: () => number;
  advance(ms: number): void;
}

/** Starts at `start` (the real time by default, so that real tokens and credentials are current). */
export function fakeClock(start = Date.now()): FakeClock {
  let at = start;
  return {
    now: () => at,
    advance(ms) {
      at += ms;
    },
  };
}
