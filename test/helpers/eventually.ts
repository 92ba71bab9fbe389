/**
 * Polls `check` until it holds; fails naming `what` after `timeoutMs`. For state that settles
 * asynchronously. The limit only turns a hang into a named failure: it returns as soon as the state
 * holds, so it is set far beyond anything a loaded machine needs, never tuned to the expected speed.
 */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
