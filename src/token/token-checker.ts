import { type ProjectedToken, checkValidityWindow, parseProjectedToken, readToken, sha256 } from './projected-token.ts';

export interface TokenChecker {
  /** The pod's token, checked; throws an AgentError for each kind of refusal. */
  check(authorization: string | undefined, now: number): ProjectedToken;
}

export interface TokenCheckerOptions {
  readonly audience: string;
  readonly skewSeconds?: number;
  /** Parsed tokens remembered by key; a pod sends the same token for hours. */
  readonly memoSize?: number;
}

const DEFAULT_MEMO_SIZE = 4096;

/**
 * Token checks with the parse memoised by the token's SHA-256, so a repeat request costs a hash
 * and a map look-up instead of base64 and JSON decoding. The validity window is checked every time.
 * Only accepted tokens are remembered: a flood of garbage cannot push the good ones out.
 */
export function createTokenChecker(options: TokenCheckerOptions): TokenChecker {
  const memoSize = options.memoSize ?? DEFAULT_MEMO_SIZE;
  const memo = new Map<string, ProjectedToken>();
  return {
    check(authorization, now) {
      const raw = readToken(authorization);
      const digest = sha256(raw);
      let token = memo.get(digest);
      if (token === undefined || token.raw !== raw) {
        token = parseProjectedToken(raw, options.audience, digest);
        if (memo.size >= memoSize) memo.delete(memo.keys().next().value as string);
        memo.set(digest, token);
      }
      checkValidityWindow(token, now, options.skewSeconds);
      return token;
    },
  };
}
