import t from 'tap';
import { checkProjectedToken } from '../src/token/projected-token.ts';
import { isAgentError } from '../src/errors.ts';

const NOW = Date.parse('2026-11-25T12:00:00Z');
const nowSeconds = NOW / 1000;
const options = { audience: 'pods.eks.amazonaws.com', now: NOW };

function b64(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

function jwt(claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'RS256', kid: 'k1' }): string {
  return `${b64(header)}.${b64(claims)}.${b64('signature')}`;
}

const good = {
  aud: ['pods.eks.amazonaws.com'],
  exp: nowSeconds + 3600,
  nbf: nowSeconds - 10,
  'kubernetes.io': { namespace: 'ns1', serviceaccount: { name: 'sa1', uid: 'u1' }, pod: { name: 'pod-a', uid: 'p1' } },
};

function codeOf(authorization: string | undefined): string {
  try {
    checkProjectedToken(authorization, options);
  } catch (error) {
    if (isAgentError(error)) return `${error.status} ${error.code}`;
    throw error;
  }
  return 'accepted';
}

t.test('a well-formed token passes and yields the pod identity', async (t) => {
  const token = jwt(good);
  const parsed = checkProjectedToken(token, options);
  t.equal(parsed.raw, token);
  t.equal(parsed.expiresAt, good.exp);
  t.same(parsed.identity, { namespace: 'ns1', serviceAccount: 'sa1', podName: 'pod-a', podUid: 'p1' });
  t.equal(checkProjectedToken(`Bearer ${token}`, options).raw, token, 'a Bearer prefix is tolerated');
  t.equal(checkProjectedToken(`${token}\n`, options).raw, token, 'surrounding whitespace is tolerated');
  t.equal(codeOf(jwt({ ...good, aud: 'pods.eks.amazonaws.com' })), 'accepted', 'a string aud is accepted');
});

t.test('each failure has its own Code, all 400', async (t) => {
  t.equal(codeOf(undefined), '400 MissingToken');
  t.equal(codeOf(''), '400 MissingToken');
  t.equal(codeOf('   '), '400 MissingToken');
  t.equal(codeOf(jwt({ ...good, pad: 'x'.repeat(17_000) })), '400 TokenTooLarge');
  t.equal(codeOf('abc.def'), '400 MalformedToken');
  t.equal(codeOf('a.b.c.d'), '400 MalformedToken');
  t.equal(codeOf(`${b64({ alg: 'RS256' })}.${b64(good)}.`), '400 MalformedToken', 'empty signature');
  t.equal(codeOf(`${b64({ alg: 'RS256' })}.${b64(good)}.sig+nature`), '400 MalformedToken', 'not base64url');
  t.equal(codeOf(`${b64({ alg: 'RS256' })}.${b64('not json')}.c2ln`), '400 MalformedToken');
  t.equal(codeOf(`${b64({ alg: 'RS256' })}.${b64([1, 2])}.c2ln`), '400 MalformedToken', 'payload not an object');
  t.equal(codeOf(jwt(good, { alg: 'none' })), '400 MalformedToken', 'alg none');
  t.equal(codeOf(jwt(good, { typ: 'JWT' })), '400 MalformedToken', 'no alg');
  t.equal(codeOf(jwt({ ...good, aud: ['sts.amazonaws.com'] })), '400 InvalidAudience');
  t.equal(codeOf(jwt({ ...good, aud: undefined })), '400 InvalidAudience');
  t.equal(codeOf(jwt({ ...good, exp: undefined })), '400 MalformedToken', 'no exp');
  t.equal(codeOf(jwt({ ...good, exp: '2030' })), '400 MalformedToken', 'string exp');
  t.equal(codeOf(jwt({ ...good, exp: 1e15 })), '400 MalformedToken', 'absurd exp');
  t.equal(codeOf(jwt({ ...good, exp: nowSeconds - 61 })), '400 TokenExpired');
  t.equal(codeOf(jwt({ ...good, nbf: nowSeconds + 61 })), '400 TokenNotYetValid');
  t.equal(codeOf(jwt({ ...good, nbf: 'soon' })), '400 MalformedToken');
});

t.test('60 s of clock skew is allowed either way', async (t) => {
  t.equal(codeOf(jwt({ ...good, exp: nowSeconds - 59 })), 'accepted');
  t.equal(codeOf(jwt({ ...good, nbf: nowSeconds + 59 })), 'accepted');
});

t.test('error messages never quote the token', async (t) => {
  const token = jwt({ ...good, exp: nowSeconds - 3600 });
  try {
    checkProjectedToken(token, options);
    t.fail('expected a rejection');
  } catch (error) {
    t.notMatch((error as Error).message, token.split('.')[1] as string);
  }
});

t.test('the memoising checker still applies the validity window on every call', async (t) => {
  const { createTokenChecker } = await import('../src/token/token-checker.ts');
  const checker = createTokenChecker({ audience: 'pods.eks.amazonaws.com', memoSize: 2 });
  const token = jwt({ ...good, exp: nowSeconds + 100 });
  const first = checker.check(token, NOW);
  t.equal(checker.check(token, NOW), first, 'the parse is remembered');
  t.equal(first.digest.length, 44, 'a SHA-256 key, base64');
  t.throws(() => checker.check(token, NOW + 200_000), { code: 'TokenExpired' }, 'expiry is checked against the clock each time');
  t.throws(() => checker.check(jwt({ ...good, aud: ['other'] }), NOW), { code: 'InvalidAudience' });
  const others = [jwt({ ...good, jti: 1 }), jwt({ ...good, jti: 2 })];
  for (const other of others) checker.check(other, NOW);
  t.not(checker.check(token, NOW), first, 'bounded: the oldest parse was let go and redone');
});

t.test('the memo is keyed by the token\'s end but a hit is the whole token: two tokens ending alike never share a parse', async (t) => {
  const { createTokenChecker } = await import('../src/token/token-checker.ts');
  const checker = createTokenChecker({ audience: 'pods.eks.amazonaws.com' });
  // A signature as long as a real one (RS256: 342 characters), so the two tokens' ends are the same.
  const signature = b64('s'.repeat(256));
  const victim = `${b64({ alg: 'RS256', kid: 'k1' })}.${b64(good)}.${signature}`;
  // The same signature segment (so the same last characters) on another payload.
  const other = `${b64({ alg: 'RS256', kid: 'k1' })}.${b64({ ...good, 'kubernetes.io': { namespace: 'attacker', serviceaccount: { name: 'x', uid: 'u' }, pod: { name: 'p', uid: 'q' } } })}.${signature}`;
  t.equal(checker.check(victim, NOW).identity?.namespace, 'ns1');
  t.equal(checker.check(other, NOW).identity?.namespace, 'attacker', 'the other token is parsed as itself');
  t.equal(checker.check(victim, NOW).identity?.namespace, 'ns1', 'and the first is not answered from the other\'s parse');
  t.equal(checker.check(`${victim}`, NOW).raw, victim);
});

t.test('the size limit counts bytes, not characters, on the fast path too', async (t) => {
  // 9,000 two-byte characters: 18,000 bytes, over 16 KiB, in fewer than 16,384 characters.
  t.equal(codeOf(`ey${'\u00e9'.repeat(9_000)}`), '400 TokenTooLarge');
  t.equal(codeOf(`ey${'\u00e9'.repeat(5_000)}`), '400 MalformedToken', '10,000 bytes: within the limit, then refused for its shape');
  t.equal(codeOf(` ${jwt(good)} `), 'accepted', 'surrounding space is trimmed');
  t.equal(codeOf(`bearer ${jwt(good)}`), 'accepted', 'a lower-case scheme too');
});
