import { connect } from 'node:net';

// Seeded generator of hostile requests for the credentials port: every one is malformed in at least
// one way the agent must refuse locally, so a fuzz run must make no upstream call at all.

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export function generateRequest(random: () => number, port: number): Buffer {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const junk = (length: number) => Buffer.from(Array.from({ length }, () => Math.floor(random() * 256))).toString('latin1');
  const now = Math.floor(Date.now() / 1000);
  const goodClaims = { aud: ['pods.eks.amazonaws.com'], exp: now + 3600, sub: 'system:serviceaccount:default:app' };
  // Each token is broken in one way the local checks catch.
  const token = pick([
    () => '',
    () => 'not-a-token',
    () => `${b64({ alg: 'RS256' })}.${b64(goodClaims)}`,
    () => `${b64({ alg: 'none' })}.${b64(goodClaims)}.${b64('sig')}`,
    () => `${b64({ alg: 'RS256' })}.${b64({ ...goodClaims, aud: ['sts.amazonaws.com'] })}.${b64('sig')}`,
    () => `${b64({ alg: 'RS256' })}.${b64({ ...goodClaims, exp: now - 7200 })}.${b64('sig')}`,
    () => `${b64({ alg: 'RS256' })}.${b64({ ...goodClaims, exp: pick([1e300, -1, 'soon', null]) })}.${b64('sig')}`,
    () => `${b64({ alg: 'RS256' })}.${b64({ ...goodClaims, nbf: now + 7200 })}.${b64('sig')}`,
    () => `${b64({ alg: 'RS256' })}.${b64(junk(40))}.${b64('sig')}`,
    () => `${junk(20)}.${junk(20)}.${junk(20)}`.replace(/[\r\n]/g, ''),
    () => `${b64({ alg: 'RS256' })}.${b64({ ...goodClaims, pad: 'x'.repeat(17_000) })}.${b64('sig')}`,
  ])();
  const method = pick(['GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'PATCH', 'TRACE', 'G ET', '']);
  const path = pick(['/v1/credentials', '/v1/credentials', '/v1/credentials?x=1', '/v1/credentials/..', '//v1/credentials', '/v1/%63redentials', '/', '/metrics', '*', `/${junk(8)}`.replace(/[\s]/g, '_')]);
  const version = pick(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9']);
  const headers: string[] = [];
  const host = pick([`127.0.0.1:${port}`, `127.0.0.1:${port}`, '169.254.170.2', '', 'a'.repeat(300), junk(10).replace(/[\r\n]/g, '')]);
  if (random() > 0.1) headers.push(`Host: ${host}`);
  if (random() > 0.9) headers.push('Host: 169.254.170.23');
  if (random() > 0.1) headers.push(`Authorization: ${pick(['', 'Bearer ', 'Basic '])}${token}`);
  if (random() > 0.9) headers.push(`Authorization: ${token}`);
  if (random() > 0.8) headers.push(`X-Junk: ${'y'.repeat(Math.floor(random() * 40_000))}`);
  if (random() > 0.9) headers.push(`${junk(5)}: ${junk(5)}`);
  if (random() > 0.9) headers.push('Transfer-Encoding: chunked', 'Content-Length: 5');
  const text = `${method} ${path} ${version}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
  return random() > 0.97 ? Buffer.from(junk(64), 'latin1') : Buffer.from(text, 'latin1');
}

/**
 * Sends one generated request on its own connection and says what came back: the status code, or
 * how the connection ended without one.
 */
export function sendRaw(port: number, bytes: Buffer, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = (outcome: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const statusOf = () => {
      const head = Buffer.concat(chunks).toString('latin1');
      return /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? (head === '' ? 'closed without answer' : 'unparsable answer');
    };
    const timer = setTimeout(() => done(`no answer in ${timeoutMs / 1000} s`), timeoutMs);
    socket.on('connect', () => socket.end(bytes));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => done(chunks.length > 0 ? statusOf() : 'connection error'));
    socket.on('close', () => done(statusOf()));
  });
}
