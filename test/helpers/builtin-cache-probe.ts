// Loaded into a process under test with `--expose-internals --import`: at exit it writes one line to
// stderr, `builtin-cache-usage {"withCache":[...],"withoutCache":[...]}`, the Node.js built-ins that
// process compiled from Node's own code cache and those it compiled from source (Node's own test of
// its code cache reads the same binding).
import { createRequire } from 'node:module';

interface CacheUsage {
  readonly compiledWithCache: Set<string>;
  readonly compiledWithoutCache: Set<string>;
}

const require = createRequire(import.meta.url);
const { internalBinding } = require('internal/test/binding') as { internalBinding(name: 'builtins'): { getCacheUsage(): CacheUsage } };

process.on('exit', () => {
  const usage = internalBinding('builtins').getCacheUsage();
  process.stderr.write(`builtin-cache-usage ${JSON.stringify({ withCache: [...usage.compiledWithCache], withoutCache: [...usage.compiledWithoutCache] })}\n`);
});
