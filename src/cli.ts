#!/usr/bin/env node
import type { Config } from './config/index.ts';
import type { Logger } from './observability/logger.ts';

// Checked before any other module is loaded: on an older Node.js, undici (and with it the whole
// agent) fails in ways that name neither Node.js nor the version, so every module comes after.
if (!supportedNode(process.versions.node)) {
  process.stderr.write(`pod-identity-agent: Node.js ${process.versions.node} is not supported: it needs Node.js 22.19 or later (24 LTS recommended)\n`);
  process.exit(1);
}
baselineTierWebAssembly((await import('node:v8')).setFlagsFromString);
const { ConfigError, INITIALIZE_USAGE, SERVER_USAGE, parseInitializeArgs, parseServerArgs } = await import('./config/index.ts');
const { formatDuration } = await import('./duration.ts');
const { createLogger } = await import('./observability/logger.ts');
const { VERSION } = await import('./version.ts');

/** Imports every chunk beside this one (dist/): their modules only define things until called. */
async function compileCache(): Promise<number> {
  if (process.env.NODE_COMPILE_CACHE === undefined) {
    process.stderr.write('pod-identity-agent compile-cache: NODE_COMPILE_CACHE is not set, so there is no cache to fill\n');
    return 2;
  }
  const { readdirSync } = await import('node:fs');
  const self = new URL(import.meta.url);
  for (const file of readdirSync(new URL('.', self))) {
    if (file.endsWith('.js') && new URL(file, self).href !== self.href) await import(new URL(file, self).href);
  }
  return 0;
}

/**
 * undici parses HTTP answers with WebAssembly, and V8's optimizing tier compiled its parser with 15 MB
 * of scratch memory that glibc then kept: 11 MB of idle RSS (bench/README.md). The baseline tier
 * (Liftoff) parses the few answers from EKS Auth and the API server well enough; the hit path runs no
 * WebAssembly. V8 fixes a function's tiers when it compiles it, so the flags hold only while a module
 * is compiled, every function of it at once (compiled lazily, each would get the defaults and tier
 * up). Held for the whole process, they would change V8's flag hash, and Node's own code cache is
 * refused under another hash: every built-in loaded after them (node:http, node:net, node:tls...)
 * was compiled from source at each start (bench/README.md). Both tiering flags are needed: either
 * alone still tiers up. undici builds its parser with `new WebAssembly.Module`, which is what is wrapped;
 * afterwards the flags go back to V8's defaults, which the image runs with.
 */
function baselineTierWebAssembly(setFlags: (flags: string) => void): void {
  const webAssembly = (globalThis as unknown as { WebAssembly: { Module: new (bytes: Uint8Array) => object } }).WebAssembly;
  webAssembly.Module = new Proxy(webAssembly.Module, {
    construct(target, args, newTarget) {
      setFlags('--no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-lazy-compilation');
      try {
        return Reflect.construct(target, args, newTarget) as object;
      } finally {
        setFlags('--wasm-tier-up --wasm-dynamic-tiering --wasm-lazy-compilation');
      }
    },
  });
}

/** package.json's engines: >=22.19. */
function supportedNode(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 19);
}

const USAGE = `Usage: pod-identity-agent <command> [flags]

Commands:
  server      serve pod credentials (see: pod-identity-agent server --help)
  initialize  give this node the agent's link-local addresses (see: pod-identity-agent initialize --help)
  version     print the version
  compile-cache
              load every chunk of the bundle without running it, so that NODE_COMPILE_CACHE holds
              their compiled code (the image's build runs it once)
`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'server':
      return server(rest);
    case 'initialize':
      return initializeNode(rest);
    case 'version':
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case 'compile-cache':
      return compileCache();
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`pod-identity-agent: unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

/** The endpoint actually called, and where it came from. */
function describeEndpoint(config: Config): { endpoint: string; endpointSource: string } {
  if (config.sts !== undefined) return { endpoint: config.sts.endpoint?.href ?? 'the SDK\'s STS endpoint', endpointSource: config.sts.endpoint === undefined ? 'sdk' : '--endpoint' };
  return { endpoint: config.endpoint.url.href, endpointSource: config.endpoint.source };
}

/**
 * `auto` is decided once the API server has been asked, after this line: say what it depends on and
 * which line gives the outcome, rather than a bare `auto` (src/trust/index.ts logs that line).
 */
function describeAuto(config: Config): { tokenVerification?: string; podBinding?: string } {
  const later = 'see the line "Kubernetes trust set up"';
  return {
    ...(config.tokenVerification === 'auto' ? { tokenVerification: `auto: jwks if the API server answers or keys are stored, else none (${later})` } : {}),
    ...(config.podBinding === 'auto' ? { podBinding: `auto: ${config.nodeName === undefined ? 'off, the node name is unknown' : 'on if tokens are verified'} (${later})` } : {}),
  };
}

async function server(argv: readonly string[]): Promise<number> {
  const parsed = parseServerArgs(argv, process.env);
  if (parsed.config === undefined) {
    process.stdout.write(SERVER_USAGE);
    return 0;
  }
  const config = parsed.config;
  const logger = createLogger({ level: config.logLevel });
  for (const warning of parsed.warnings) logger.warn(warning);
  logger.info(
    {
      version: VERSION,
      config: { ...config, ...describeEndpoint(config), ...describeAuto(config), maxCredentialRetention: formatDuration(config.maxCredentialRetentionMs) },
    },
    'starting pod-identity-agent',
  );
  guardProcess(logger);
  // Imported here, not at the top: `initialize --watch` runs as a sidecar for the pod's whole life,
  // and without the server's modules it costs a fraction of the memory.
  const { buildAgent } = await import('./agent.ts');
  const agent = buildAgent(config, { logger });
  // Listening for signals from the start: start-up may wait for node credentials for as long as they
  // fail, and a SIGTERM then (a rollout giving up on this version) should end it cleanly.
  const signalled = waitForSignal();
  const started = agent.listen();
  started.catch(() => undefined);
  const signal = await Promise.race([signalled, started.then(() => signalled)]);
  const deadline = formatDuration(config.shutdownTimeoutMs);
  logger.info({ signal, deadline }, 'shutting down: refusing new connections, finishing in-flight requests');
  // Backstop: should closing itself hang, leave anyway, still inside the DaemonSet's grace period.
  setTimeout(() => {
    logger.warn('shutdown did not complete in time; exiting');
    logger.flush();
    process.exit(0);
  }, config.shutdownTimeoutMs + 2000).unref();
  await agent.close(config.shutdownTimeoutMs);
  logger.info('stopped');
  logger.flush();
  return 0;
}

/**
 * A rejected promise nobody awaited belongs to one request or renewal: log it and carry on.
 * A thrown exception nobody caught leaves the process in an unknown state: log it and exit,
 * for the kubelet to restart a clean one.
 */
function guardProcess(logger: Logger): void {
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));
  process.on('uncaughtException', (error) => {
    logger.fatal({ err: error }, 'uncaught exception; exiting');
    logger.flush();
    process.exit(1);
  });
}

async function initializeNode(argv: readonly string[]): Promise<number> {
  const parsed = parseInitializeArgs(argv);
  if (parsed.config === undefined) {
    process.stdout.write(INITIALIZE_USAGE);
    return 0;
  }
  // Each command's modules load with it: the server's start does not wait for these.
  const [{ default: pino }, { initialize }, { remove }, { watch }] = await Promise.all([
    // The default export: bundled, a CommonJS package's dynamic import has no named ones.
    import('pino'),
    import('./netsetup/initialize.ts'),
    import('./netsetup/remove.ts'),
    import('./netsetup/watch.ts'),
  ]);
  const logger = createLogger({ level: parsed.config.logLevel, destination: pino.destination({ dest: 1, sync: true }) });
  logger.info({ version: VERSION, config: parsed.config }, parsed.config.remove ? "removing the agent's node set-up" : 'initializing node');
  const log = (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => logger[level](fields ?? {}, message);
  if (parsed.config.remove) {
    await remove({ ...parsed.config, log });
    return 0;
  }
  if (!parsed.config.watch) {
    await initialize({ ...parsed.config, log });
    return 0;
  }
  // Listening before the first pass: a SIGTERM then still ends the watcher with 0, not by the signal.
  const stop = new AbortController();
  void waitForSignal().then((signal) => {
    logger.info({ signal }, 'stopping the watcher');
    stop.abort();
  });
  await watch({ ...parsed.config, log, signal: stop.signal });
  return 0;
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    // One clear line: operators read this in `kubectl logs` of a crash-looping pod.
    const message = error instanceof ConfigError ? error.message : `${argv[0] === 'server' ? 'cannot start' : 'failed'}: ${(error as Error).message}`;
    process.stderr.write(`pod-identity-agent ${argv[0] ?? ''}: ${message}\n`);
    process.exitCode = 1;
  },
);
