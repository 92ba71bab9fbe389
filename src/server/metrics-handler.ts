import type { Registry } from 'prom-client';
import type { RequestHandler } from './credentials-handler.ts';
import { sendJson } from '../wire.ts';

export function createMetricsHandler(registry: Registry): RequestHandler {
  return (req, res) => {
    if (req.url?.split('?')[0] !== '/metrics') {
      sendJson(res, 404, JSON.stringify({ Code: 'NotFound', Message: 'metrics are served at /metrics' }));
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      },
      () => sendJson(res, 500, JSON.stringify({ Code: 'InternalError', Message: 'metrics could not be collected' })),
    );
  };
}
