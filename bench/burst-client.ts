// Sends one request per token, all at once, and reports statuses and latency: the cold-burst load.
// The connections are opened first (a request to "/", answered locally), so that what is timed is
// the server's work and not this process setting up a thousand sockets.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';

const [url, tokenFile] = process.argv.slice(2) as [string, string];
const tokens = JSON.parse(readFileSync(tokenFile, 'utf8')) as string[];
const dispatcher = new Agent({ connections: tokens.length });
const statuses: Record<string, number> = {};
const latencies: number[] = [];

const origin = new URL(url).origin;
await Promise.all(tokens.map(() => request(`${origin}/`, { dispatcher }).then((response) => response.body.dump())));

// With a third argument `--handshake`: says "opened" on stdout once the connections are up and waits
// for a line on stdin before the burst, so that the caller can read the server's CPU over the burst alone.
if (process.argv[4] === '--handshake') {
  process.stdout.write('opened\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.unref();
}
const cpuBefore = process.cpuUsage();
await Promise.all(
  tokens.map(async (token) => {
    const started = performance.now();
    try {
      const response = await request(url, { headers: { authorization: token }, dispatcher });
      await response.body.dump();
      statuses[response.statusCode] = (statuses[response.statusCode] ?? 0) + 1;
    } catch (error) {
      const code = (error as { code?: string }).code ?? 'error';
      statuses[code] = (statuses[code] ?? 0) + 1;
    }
    latencies.push(performance.now() - started);
  }),
);
// This process's own CPU over the timed part: on two cores, what it takes is not the server's.
const cpu = process.cpuUsage(cpuBefore);
latencies.sort((a, b) => a - b);
const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0;
process.stdout.write(JSON.stringify({ statuses, p50Ms: at(50), p99Ms: at(99), maxMs: latencies.at(-1) ?? 0, clientCpuSeconds: (cpu.user + cpu.system) / 1e6 }));
await dispatcher.close();
