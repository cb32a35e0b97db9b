/**
 * The config schema, and with it every default, written down once.
 * Unknown keys are refused everywhere, so a typo is an error, not a silent no-op.
 */
import { DEFAULT_FILTERS, FILTER_MODULES } from '../filters';
import { matchProperties } from './match-schema';
import { registryConfigSchema } from '../registry/config';
import { clusterTlsSchema, listenerTlsSchema, tlsSchema } from '../tls/tls-config';
import { circuitBreakerSchema, fallbackSchema, protectionDefinitions } from '../protection/config';
import { alarmsSchema } from '../alarms/config';

/** Each filter adds its sections to a route, and to a route's action. */
const filterRouteProps: Record<string, unknown> = Object.assign({}, ...FILTER_MODULES.map((m) => m.routeSchema ?? {}));
const filterActionProps: Record<string, unknown> = Object.assign({}, ...FILTER_MODULES.map((m) => m.actionSchema ?? {}));
/** ... and sections of their own at the top of the config (`authorization`). */
const filterConfigProps: Record<string, unknown> = Object.assign({}, ...FILTER_MODULES.map((m) => m.configSchema ?? {}));

const duration = (def: number, min = 1) => ({ type: 'integer', minimum: min, maximum: 86_400_000, default: def });
/** `host:port` or `[v6]:port`; the form is checked in config.ts, which says what is wrong with it. */
const address = { type: 'string' };
const labels = { type: 'object', additionalProperties: { type: 'string' }, default: {} };
// Ajv applies no defaults inside anyOf: buildConfig fills an endpoint's labels and weight itself.
/** A cluster's endpoints: in the config, and as the admin API replaces them. */
export const endpointList = {
  type: 'array',
  items: {
    anyOf: [
      address,
      {
        type: 'object',
        additionalProperties: false,
        required: ['address'],
        properties: { address, labels, weight: { type: 'integer', minimum: 1, maximum: 1000, default: 1 } },
      },
    ],
  },
};
export const configSchema = {
  type: 'object',
  additionalProperties: false,
  definitions: protectionDefinitions,
  properties: {
    /** Alarms on the sidecar's own signals, and the protective actions they switch on (src/alarms). */
    alarms: alarmsSchema,
    admin: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        address: { ...address, default: '127.0.0.1:15000' },
        /**
         * The bearer token that POST /config, POST /drain and /debug/* require. Read from this file;
         * a file that does not exist is created (0600) with a new random token. Unset: a new token
         * in a fresh 0700 directory under the temp directory, its path logged at start-up.
         */
        tokenFile: { type: 'string', minLength: 1 },
      },
    },
    workers: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** 0 means one per CPU. */
        threads: { type: 'integer', minimum: 0, maximum: 256, default: 0 },
        /** Connections a worker may serve at once before new ones queue. */
        maxConnectionsPerWorker: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 100_000 },
        /**
         * The most a worker's young generation (V8's new space) may grow to, in MB. Taken when the
         * workers start. V8's own limit lets a busy worker keep tens of MB of new space it has
         * mostly emptied; 8 keeps it small at about 1 µs more collector time per request.
         */
        youngGenerationMb: { type: 'integer', minimum: 1, maximum: 1024, default: 8 },
        /**
         * `batch`: the main thread (it accepts and hands connections on) runs under Linux's
         * SCHED_BATCH, so its wake-ups do not preempt a busy CPU; `normal`: the default policy.
         * Taken at start.
         */
        mainThreadScheduling: { enum: ['batch', 'normal'], default: 'batch' },
      },
    },
    listeners: {
      type: 'array',
      default: [
        { name: 'outbound', address: '0.0.0.0:15001', direction: 'outbound', capture: true },
        { name: 'inbound', address: '0.0.0.0:15006', direction: 'inbound', capture: true },
      ],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'address'],
        properties: {
          name: { type: 'string', pattern: '^[a-zA-Z0-9_.-]{1,64}$' },
          address,
          direction: { enum: ['inbound', 'outbound'], default: 'outbound' },
          /** Capture listeners recover each connection's original destination (iptables REDIRECT). */
          capture: { type: 'boolean', default: false },
          /** Where traffic goes when no route matches; explicit listeners usually name one. */
          cluster: { type: 'string' },
          /**
           * What the listener speaks. `auto`: detected per connection (HTTP/1, HTTP/2, Dubbo, TLS,
           * else opaque TCP); `http`: HTTP/1 or HTTP/2 only; `dubbo`: Dubbo only; `tcp`: no
           * detection, every connection is opaque TCP (e.g. a database port). With `http` and
           * `dubbo` anything else is refused: nothing falls back to opaque TCP.
           */
          protocol: { enum: ['auto', 'http', 'dubbo', 'tcp'], default: 'auto' },
          /**
           * `auto` listeners: what happens to a connection that is no protocol Sluice speaks (or
           * says nothing within tcp.sniffTimeoutMs). `passthrough`: proxied as opaque TCP, without
           * routes or filters; `refuse`: closed and counted.
           */
          opaque: { enum: ['passthrough', 'refuse'], default: 'passthrough' },
          /** Inbound listeners: this listener's mTLS mode, instead of tls.inbound.mode (tls.inbound.ports still win). */
          tls: listenerTlsSchema,
        },
      },
    },
    routes: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['action'],
        properties: {
          name: { type: 'string' },
          match: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: matchProperties,
          },
          action: {
            type: 'object',
            additionalProperties: false,
            properties: {
              cluster: { type: 'string' },
              /** Only endpoints whose labels include all of these. */
              labels: { type: 'object', additionalProperties: { type: 'string' } },
              /** Send to the connection's original destination. */
              passthrough: { type: 'boolean' },
              /** Answer locally with this status. */
              directResponse: {
                type: 'object',
                additionalProperties: false,
                required: ['status'],
                properties: {
                  status: { type: 'integer', minimum: 200, maximum: 599 },
                  body: { type: 'string', default: '' },
                },
              },
              timeoutMs: { type: 'integer', minimum: 1, maximum: 86_400_000 },
              ...filterActionProps,
            },
          },
          ...filterRouteProps,
          /** What the route answers instead of a refusal (src/protection/config.ts). */
          fallback: fallbackSchema,
        },
      },
    },
    /**
     * The filters every request runs through, in order, by name. A route's section for a filter
     * (its `fault:`, `retry:`, ...) takes effect only if the filter is listed.
     */
    filters: {
      type: 'array',
      items: FILTER_MODULES.length > 0 ? { enum: FILTER_MODULES.map((m) => m.name) } : { type: 'string', not: {} },
      uniqueItems: true,
      default: DEFAULT_FILTERS,
    },
    clusters: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'endpoints'],
        properties: {
          name: { type: 'string', pattern: '^[a-zA-Z0-9_.:-]{1,128}$' },
          /** `auto`: the protocol the downstream spoke. */
          protocol: { enum: ['auto', 'http1', 'http2'], default: 'auto' },
          lbPolicy: { enum: ['round_robin', 'least_request'], default: 'round_robin' },
          connectTimeoutMs: duration(5000),
          maxConnectionsPerEndpoint: { type: 'integer', minimum: 1, maximum: 65536, default: 1024 },
          maxPendingRequests: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 1024 },
          endpoints: endpointList,
          /** `mutual`: connections to the endpoints are mTLS with the workload identity (src/tls/). */
          tls: clusterTlsSchema,
          /** Limits across every worker, and breakers per endpoint and interface (src/protection/config.ts). */
          circuitBreaker: circuitBreakerSchema,
        },
      },
    },
    /** Link encryption: the workload identity, inbound termination, outbound origination (src/tls/tls-config.ts). */
    tls: tlsSchema,
    inbound: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** Inbound connections go to this address at their original port. */
        applicationAddress: { type: 'string', default: '127.0.0.1' },
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxHeaderBytes: { type: 'integer', minimum: 1024, maximum: 1_048_576, default: 65536 },
        maxHeaders: { type: 'integer', minimum: 8, maximum: 10_000, default: 100 },
        /** From a connection's first byte (or the end of the previous request) to the end of the head. */
        headerTimeoutMs: duration(10_000),
        /** A connection with no request in flight is closed after this. */
        idleTimeoutMs: duration(300_000),
        /** Whole-response timeout for a routed request, unless the route says otherwise. */
        requestTimeoutMs: duration(15_000),
        /** Idle upstream keep-alive connections are closed after this. */
        upstreamIdleTimeoutMs: duration(60_000),
        /** The value of the Via header Sluice adds; empty to add none. */
        via: { type: 'string', default: '1.1 sluice' },
        /**
         * Paths are normalised before routes see them, and forwarded as normalised (RFC 3986:
         * percent-encoded unreserved characters decoded, dot segments removed), so `/./admin`
         * and `/%61dmin` meet the rules written for `/admin`.
         */
        normalizePath: { type: 'boolean', default: true },
        /** `//a///b` becomes `/a/b` before matching and forwarding. */
        mergeSlashes: { type: 'boolean', default: true },
        /**
         * `%2F` and `%5C` (encoded slash and backslash) in a path: `reject` answers 400 (an
         * upstream that decodes them would see another path than the routes did); `keep` leaves
         * them encoded (routes match the encoded form); `unescape` decodes them to `/` before
         * matching and forwarding.
         */
        escapedSlashes: { enum: ['reject', 'keep', 'unescape'], default: 'reject' },
      },
    },
    tcp: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /**
         * How long to wait for a client's first bytes before treating the connection as opaque
         * TCP. Long enough that a slow or busy HTTP client is never mistaken for opaque TCP (and
         * so skips routing and filters); server-speaks-first protocols on ports not listed in
         * opaquePorts wait this long for their banner.
         */
        sniffTimeoutMs: duration(1000),
        /**
         * Original destination ports that are opaque TCP without detection: server-speaks-first
         * protocols (SMTP, MySQL) and others Sluice does not parse.
         */
        opaquePorts: {
          type: 'array',
          items: { type: 'integer', minimum: 1, maximum: 65535 },
          uniqueItems: true,
          default: [25, 587, 3306, 4444, 5432, 6379, 9300, 11211],
        },
        connectTimeoutMs: duration(5000),
        idleTimeoutMs: duration(3_600_000),
      },
    },
    dubbo: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** A frame whose header announces a larger body is refused before any of it is buffered (Dubbo's own default). */
        maxBodyBytes: { type: 'integer', minimum: 1024, maximum: 1_073_741_824, default: 8 * 1024 * 1024 },
        /** Serialization ids accepted; 2 is Hessian2, the only one Sluice can read attachments from. */
        serializations: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 31 }, minItems: 1, uniqueItems: true, default: [2] },
        /** Calls in flight on one downstream connection; more are refused with status 100. */
        maxCallsPerConnection: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 1000 },
        /**
         * Health of multiplexed upstream connections (src/protocols/dubbo/dubbo-pool.ts). A connection with calls
         * pending that has received nothing for upstreamProbeAfterMs gets a heartbeat; if nothing at all comes
         * back within upstreamProbeTimeoutMs, or upstreamMaxConsecutiveTimeouts calls in a row time out on it
         * with no response in between, it is replaced: no new calls, calls not yet written move to another
         * connection, and it closes once the calls written to it have ended.
         */
        upstreamProbeAfterMs: duration(1000, 100),
        upstreamProbeTimeoutMs: duration(2000, 100),
        upstreamMaxConsecutiveTimeouts: { type: 'integer', minimum: 1, maximum: 10_000, default: 3 },
      },
    },
    accessLog: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: false },
        /** A file path, or `stdout`. */
        path: { type: 'string', minLength: 1, default: 'stdout' },
        /** Fraction of requests logged, 0 to 1. */
        sampleRate: { type: 'number', minimum: 0, maximum: 1, default: 1 },
        /** Bytes of lines a thread holds while the destination is not taking them; beyond it lines are dropped. */
        bufferBytes: { type: 'integer', minimum: 4096, maximum: 1 << 30, default: 1 << 20 },
      },
    },
    drain: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /**
         * After SIGTERM or POST /drain: how long the listeners keep accepting while /ready says
         * 503 and every client is told to go elsewhere, so that requests sent before the
         * endpoint removal reached them are served (Istio's terminationDrainDuration).
         */
        periodMs: duration(5000, 0),
        /** After the drain period: how long open connections get to finish before they are closed. */
        timeoutMs: duration(15_000),
      },
    },
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    ...filterConfigProps,
    /** `registries` (ZooKeeper ensembles) and `registry` (on-demand subscription): src/registry/config.ts. */
    ...registryConfigSchema,
  },
} as const;
