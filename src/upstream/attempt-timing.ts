import type { Dispatcher } from 'undici';
import type { UpstreamObserver } from './types.ts';

/**
 * An undici interceptor reporting every HTTP attempt (start, status, duration) to the observer,
 * whichever client sent it: composed once onto the upstream pool, so EKS Auth and the STS SDK
 * are timed by the same code. Status 0 means no answer arrived.
 */
export function timeAttempts(observer: UpstreamObserver): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (options, handler) => {
    const started = performance.now();
    let status = 0;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      observer.attemptEnded?.({ status, durationMs: performance.now() - started });
    };
    observer.attemptStarted?.();
    try {
      return dispatch(options, {
        onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
        onRequestUpgrade: (controller, statusCode, headers, socket) => handler.onRequestUpgrade?.(controller, statusCode, headers, socket),
        onResponseStart: (controller, statusCode, headers, statusMessage) => {
          // Interim 1xx answers come before the final one.
          if (statusCode >= 200) status = statusCode;
          return handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
        },
        onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
        onResponseEnd: (controller, trailers) => {
          end();
          return handler.onResponseEnd?.(controller, trailers);
        },
        onResponseError: (controller, error) => {
          end();
          return handler.onResponseError?.(controller, error);
        },
      });
    } catch (error) {
      end();
      throw error;
    }
  };
}
