import { request } from 'node:http';

/**
 * This agent's own `/readyz`, asked as the kubelet asks it (never through a proxy from the
 * environment): true on 200. What waits for readiness waits for exactly what the probe reports.
 */
export function askReadyz(probePort: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: probePort, path: '/readyz', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', () => resolve(false));
    req.end();
  });
}
