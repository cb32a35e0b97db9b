/**
 * Pieces of the route match language that both validation and the router use, so that what
 * a config check accepts is exactly what the router compiles.
 */

/**
 * A route regex matches the whole value (like Envoy's `safe_regex`), not a substring.
 * Config validation compiles with this same function, so what loads also compiles here.
 */
export function compileMatchRegex(source: string, ignoreCase = false): RegExp {
  // compiled alone first: `a)|(b` is invalid, but wrapped it compiles and escapes the anchors
  const flags = ignoreCase ? 'i' : '';
  new RegExp(source, flags);
  return new RegExp(`^(?:${source})$`, flags);
}

/** The subset key of a label set: the same labels in any order give the same key. */
export function labelsKey(labels: Readonly<Record<string, string>> | undefined): string {
  if (!labels) return '';
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(',');
}
