import type { Registry } from 'prom-client';
import { agentError } from '../errors.ts';
import { sendError, sendNotFound } from '../wire.ts';
import type { RequestHandler } from './http-server.ts';

export function createMetricsHandler(registry: Registry): RequestHandler {
  return (req, res) => {
    if (req.url?.split('?')[0] !== '/metrics') {
      sendNotFound(res, 'metrics are served at /metrics');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      },
      () => sendError(res, agentError('InternalError', 'metrics could not be collected')),
    );
  };
}
