import type { Dispatcher } from 'undici';
import { agentError, isAgentError } from '../errors.ts';

/** Larger than any credential answer can be: more is a broken or hostile upstream. */
export const MAX_RESPONSE_BYTES = 64 * 1024;

/** The body, whole, refusing anything larger than MAX_RESPONSE_BYTES. */
export async function readBoundedBody(body: Dispatcher.ResponseData['body'], signal: AbortSignal | undefined, service: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > MAX_RESPONSE_BYTES) {
        body.destroy();
        throw agentError('UpstreamInvalidResponse', `${service} answered more than ${MAX_RESPONSE_BYTES} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (isAgentError(error) || signal?.aborted === true) throw error;
    throw agentError('UpstreamUnavailable', `${service}'s answer was cut off (${(error as Error).message})`, { cause: error });
  }
  return Buffer.concat(chunks);
}
