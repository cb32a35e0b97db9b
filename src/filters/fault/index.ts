/**
 * The `fault` filter: a route's `fault` section delays or aborts a share of its requests.
 *
 *   routes:
 *     - match: { service: orders }
 *       action: { cluster: orders }
 *       fault:
 *         abort: { status: 503, percent: 10, grpcStatus: 14, dubboStatus: 70 }
 *         delay: { ms: 200, percent: 50 }
 */
import type { FilterModule } from '../module';
import { FAULT_ABORTS, FAULT_DELAYS, FaultFilter } from './fault-filter';

/** A share of requests, in percent: 0 to 100, fractions allowed (0.1 is one request in a thousand). */
const percent = { type: 'number', minimum: 0, maximum: 100, default: 100 };

export const FAULT_MODULE: FilterModule = {
  name: 'fault',
  routeSchema: {
    fault: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        abort: {
          type: 'object',
          additionalProperties: false,
          required: ['status'],
          properties: {
            /** The HTTP status of the answer; gRPC and Dubbo map it unless told otherwise. */
            status: { type: 'integer', minimum: 200, maximum: 599 },
            percent,
            /** gRPC: this status instead of gRPC's mapping of `status`. */
            grpcStatus: { type: 'integer', minimum: 0, maximum: 16 },
            /** Dubbo: this status byte instead of the mapping of `status` (any but OK, 20). */
            dubboStatus: { enum: [30, 31, 40, 50, 60, 70, 80, 90, 100] },
          },
        },
        delay: {
          type: 'object',
          additionalProperties: false,
          required: ['ms'],
          properties: {
            ms: { type: 'integer', minimum: 1, maximum: 86_400_000 },
            percent,
          },
        },
      },
    },
  },
  stats: [
    { name: FAULT_ABORTS, kind: 'counter', by: 'route', help: 'Requests the fault filter answered itself (fault.abort), by route' },
    { name: FAULT_DELAYS, kind: 'counter', by: 'route', help: 'Requests the fault filter held back (fault.delay), by route' },
  ],
  routeSeries(route, routeName) {
    if (route.fault === undefined) return [];
    return [FAULT_ABORTS, FAULT_DELAYS].map((name) => ({ name, labels: { route: routeName } }));
  },
  create: (env) => new FaultFilter(env),
};
