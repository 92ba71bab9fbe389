// Runs inside the test's "pod" namespace: credential requests without pause, over new connections
// and over keep-alive, at both link-local addresses, until SIGTERM; then prints one JSON line of
// counts. A request counts as failed unless it gets a 200 with credentials of the right shape.
// byKey counts the answers by AccessKeyId and path: who served them, when two agents do (test/migration-netns.test.ts).
import { Agent, request } from 'node:http';
import { readFileSync } from 'node:fs';

const [tokenFile] = process.argv.slice(2) as [string];
const token = readFileSync(tokenFile, 'utf8').trim();
const counts = { requests: 0, failures: 0, keepAliveRetries: 0, lateTimeouts: 0, byTarget: {} as Record<string, number>, byKey: {} as Record<string, number>, errors: [] as string[] };
let stopping = false;
/** For the failures' detail: when (ms since start), and who answered this loop last. */
const T0 = Date.now();
const lastKey: Record<string, string> = {};
let termAt = -1;
/** When this process last resumed from a pause of over 1 s (its own timer 10 times late). */
let lastPauseEnd = 0;
let lastTick = Date.now();
setInterval(() => {
  const now = Date.now();
  if (now - lastTick > 1000) lastPauseEnd = now;
  lastTick = now;
}, 100);

function once(host: string, agent: Agent | false): Promise<{ ok: boolean; error?: string; detail?: string; reused?: boolean; key?: string }> {
  return new Promise((resolve) => {
    let answered = false;
    const req = request({ host, port: 80, path: '/v1/credentials', agent, headers: { authorization: token, host: host.includes(':') ? `[${host}]` : host }, timeout: 2000 }, (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        const key = res.statusCode === 200 ? ((JSON.parse(body) as { AccessKeyId?: string }).AccessKeyId ?? '') : '';
        const ok = /^ASIA[A-Z0-9]{16}$/.test(key);
        if (ok) lastKey[host + String(agent !== false)] = key;
        resolve(ok ? { ok, key } : { ok, error: `HTTP ${res.statusCode} ${body.slice(0, 200)}` });
      });
    });
    // When this process itself was descheduled for over 2 s (a loaded machine, GC), libuv runs the
    // expired timer before reading the answer that arrived meanwhile (captured: answered in 31 ms,
    // read never, the client's RST 2.2 s later). The timeout waits one turn of the loop, in which any
    // answer already received is read: only a request the server left unanswered counts as timed out.
    // A request in flight across such a pause of the client gets 2 s more, once.
    const start = Date.now();
    const events: string[] = [];
    const mark = (event: string) => () => events.push(`${event}@${Date.now() - start}`);
    // The local port and the wall-clock start match a failure to a packet capture.
    let localPort: number | undefined;
    req.on('socket', (socket) => {
      mark('socket')();
      localPort = socket.localPort;
      socket
        .on('connect', () => {
          localPort = socket.localPort;
          mark('connect')();
        })
        .on('data', mark('data'))
        .on('end', mark('end'));
    });
    let extended = false;
    req.on('timeout', () =>
      setImmediate(() => {
        if (answered || (!extended && lastPauseEnd >= start)) {
          counts.lateTimeouts++;
          extended = true;
          if (!answered) req.setTimeout(2000);
        } else req.destroy(new Error('timeout'));
      }),
    );
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ ok: false, error: `${error.code ?? error.message}`, detail: `started ${start - T0} ms (${new Date(start).toISOString()}), port ${localPort}, SIGTERM ${termAt} ms, ${events.join(' ')}, previous answer ${lastKey[host + String(agent !== false)]}`, reused: req.reusedSocket }));
    req.end();
  });
}

async function loop(host: string, keepAlive: boolean): Promise<void> {
  const agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: 1 }) : false;
  const name = `${host} ${keepAlive ? 'keep-alive' : 'new connections'}`;
  while (!stopping) {
    let result = await once(host, agent);
    // As HTTP clients do (RFC 9112, 9.3.1): a reused connection closed by the server before any
    // answer is retried once on a new one. Counted apart; never needed on a new connection.
    if (!result.ok && result.reused === true) {
      counts.keepAliveRetries++;
      result = await once(host, agent);
    }
    counts.requests++;
    counts.byTarget[name] = (counts.byTarget[name] ?? 0) + 1;
    if (result.key !== undefined) counts.byKey[`${result.key} ${name}`] = (counts.byKey[`${result.key} ${name}`] ?? 0) + 1;
    if (!result.ok) {
      counts.failures++;
      if (counts.errors.length < 20) counts.errors.push(`${name}: ${result.error} (request ${counts.requests}; ${result.detail ?? ''})`);
    }
  }
  if (agent !== false) agent.destroy();
}

const loops = ['169.254.170.23', 'fd00:ec2::23'].flatMap((host) => [loop(host, false), loop(host, true)]);
// With the keep-alive retries and the answers by key so far: the migration test reads who served each phase, and retries per step.
setInterval(() => process.stdout.write(`progress ${counts.requests} ${counts.keepAliveRetries} ${JSON.stringify(counts.byKey)}\n`), 100);
process.on('SIGTERM', () => {
  termAt = Date.now() - T0;
  stopping = true;
  void Promise.all(loops).then(() => {
    process.stdout.write(`${JSON.stringify(counts)}\n`);
    process.exit(0);
  });
});
process.stdout.write('started\n');
