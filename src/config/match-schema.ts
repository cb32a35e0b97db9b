/**
 * The schema of the route match language, apart from the config schema so that filters which
 * match requests the way routes do (authorization rules) take the same fields, written once.
 */

export const stringMatch = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  maxProperties: 1,
  properties: {
    exact: { type: 'string' },
    prefix: { type: 'string' },
    regex: { type: 'string' },
  },
};

/** A header value matcher: a plain string means exact. `present: true` matches any value. */
export const headerMatch = {
  anyOf: [
    { type: 'string' },
    {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      maxProperties: 1,
      properties: { ...stringMatch.properties, present: { type: 'boolean' } },
    },
  ],
};

/** The fields of a route's `match`; every field given must match (an empty match matches everything). */
export const matchProperties = {
  listener: { type: 'string' },
  direction: { enum: ['inbound', 'outbound'] },
  protocol: { enum: ['http1', 'http2', 'grpc', 'dubbo'] },
  service: { anyOf: [{ type: 'string' }, stringMatch] },
  /** HTTP and gRPC: the host the request names; never matches a Dubbo call. */
  authority: { anyOf: [{ type: 'string' }, stringMatch] },
  method: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1 }] },
  path: stringMatch,
  headers: { type: 'object', additionalProperties: headerMatch },
};

/** The names of the match fields, for code that looks for them in a section that has others beside. */
export const MATCH_FIELDS = Object.keys(matchProperties) as ReadonlyArray<keyof typeof matchProperties>;
