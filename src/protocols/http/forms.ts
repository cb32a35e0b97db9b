/**
 * HTTP messages between the two versions. A request or response travels in the form its
 * codec made (an HTTP/1 head, an HTTP/2 field list) and is converted only when the other side
 * speaks the other version, so the common case (same version both sides) copies nothing.
 *
 *   HTTP/1 request  ─▶ HTTP/1 upstream: the head's own field list (encodeRequestHead)
 *                   ─▶ HTTP/2 upstream: h1RequestToH2   (pseudo-headers, names lower case, hop-by-hop dropped)
 *   HTTP/2 request  ─▶ HTTP/2 upstream: its fields, :path and :authority as routed
 *                   ─▶ HTTP/1 upstream: h2RequestToH1Head
 *   responses the same way back: h1ResponseToH2, h2ResponseToH1
 *
 * Header edits (a route's request/response header changes) are applied here, as a message is
 * written in its upstream or downstream form.
 */
import type { HeaderOps } from '../../exchange/filter';
import type { Http1Head } from '../http1/http1-decoder';
import { isHopByHop } from '../http1/http1-encoder';
import type { Http2Stream } from '../http2/http2-connection';
import type { Authority, Target } from './http-target';

/** An HTTP request as its downstream read it, with the target and authority it was routed on. */
export type HttpRequestForm =
  | { readonly kind: 'h1'; readonly head: Http1Head; readonly target: Target; readonly authority: Authority }
  | { readonly kind: 'h2'; readonly stream: Http2Stream; readonly target: Target; readonly authority: Authority };

/** An HTTP response head as its upstream sent it. */
export type HttpResponseForm =
  /** `raw`: the upstream's read the head is the start of, valid while the head is being handled (http1-pool.ts); else null. */
  | { readonly kind: 'h1'; readonly head: Http1Head; readonly raw: Buffer | null }
  | { readonly kind: 'h2'; readonly fields: string[] };

/** Adds `via` to a flat lower-case field list in place (after any `via` already there). */
export function addVia(f: string[], via: string): void {
  if (!via) return;
  for (let i = 0; i < f.length; i += 2) {
    if (f[i] === 'via') { f[i + 1] = `${f[i + 1]}, ${via}`; return; }
  }
  f.push('via', via);
}

/** Applies header edits to a flat field list (names compared without case), returning a new list. */
export function applyEdits(f: readonly string[], edits: readonly HeaderOps[]): string[] {
  const drop = new Set<string>();
  for (const e of edits) {
    for (const n of e.remove) drop.add(n);
    for (const [n] of e.set) drop.add(n);
  }
  const out: string[] = [];
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name.charCodeAt(0) !== 58 /* : */ && drop.has(name.toLowerCase())) continue;
    out.push(name, f[i + 1]);
  }
  for (const e of edits) for (const [n, v] of e.set) out.push(n, v);
  return out;
}

/** HTTP/2 request fields → the flat HTTP/1 list: pseudo-headers and connection-specific fields left out, cookies joined. */
export function h2ToFlat(f: readonly string[]): string[] {
  const out: string[] = [];
  let cookie: string | undefined;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name.charCodeAt(0) === 58 /* : */ || isHopByHop(name)) continue;
    if (name === 'cookie') { cookie = cookie === undefined ? f[i + 1] : `${cookie}; ${f[i + 1]}`; continue; }
    out.push(name, f[i + 1]);
  }
  if (cookie !== undefined) out.push('cookie', cookie);
  return out;
}

/** An HTTP/1 response head → HTTP/2 fields: names lower-cased, connection-specific fields dropped, `via` added. */
export function h1ResponseToH2(status: number, flat: readonly string[], tokens: readonly string[], via: string): string[] {
  const out: string[] = [':status', String(status)];
  let viaSeen = false;
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase();
    if (isHopByHop(name) && name !== 'content-length') continue;
    if (tokens.includes(name)) continue;
    let value = flat[i + 1];
    if (name === 'via' && via && !viaSeen) { viaSeen = true; value = `${value}, ${via}`; }
    out.push(name, value);
  }
  if (via && !viaSeen) out.push('via', via);
  return out;
}

/**
 * An HTTP/1 request → HTTP/2 request fields (RFC 9113 §8.3.1): the routed :path and :authority,
 * end-to-end fields lower case; Host, Connection and the fields it names, Keep-Alive,
 * Transfer-Encoding, Upgrade dropped; TE only as "trailers".
 */
export function h1RequestToH2(head: Http1Head, path: string, authority: string, via: string): string[] {
  const out: string[] = [':method', head.method, ':scheme', 'http', ':authority', authority, ':path', path];
  const h = head.headers;
  const tokens = head.connectionTokens;
  let viaSeen = false;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i].toLowerCase();
    if (name === 'te') { if (h[i + 1].toLowerCase().includes('trailers')) out.push('te', 'trailers'); continue; }
    if (isHopByHop(name) && name !== 'content-length') continue;
    if (tokens.length !== 0 && tokens.includes(name)) continue;
    let value = h[i + 1];
    if (name === 'via' && via && !viaSeen) { viaSeen = true; value = `${value}, ${via}`; }
    out.push(name, value);
  }
  if (via && !viaSeen) out.push('via', via);
  return out;
}

/** HTTP/2 response fields → status and the flat HTTP/1 list (pseudo-headers and connection-specific fields left out). */
export function h2ResponseToH1(f: readonly string[]): { status: number; headers: string[]; contentLength: number } {
  let status = 0;
  let contentLength = -1;
  const headers: string[] = [];
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name.charCodeAt(0) === 58 /* : */) {
      if (name === ':status') status = Number(f[i + 1]);
      continue;
    }
    if (name === 'content-length') { contentLength = Number(f[i + 1]); continue; }
    if (isHopByHop(name)) continue;
    headers.push(name, f[i + 1]);
  }
  return { status, headers, contentLength };
}

/** Trailers from HTTP/1 → HTTP/2: names lower case, connection-specific fields dropped. */
export function trailersToH2(f: readonly string[]): string[] {
  const t: string[] = [];
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i].toLowerCase();
    if (!isHopByHop(name)) t.push(name, f[i + 1]);
  }
  return t;
}

/** The value of a field in a flat list (name lower case; HTTP/1 names compared without case). */
export function fieldOf(f: readonly string[], name: string): string | undefined {
  for (let i = 0; i < f.length; i += 2) {
    const n = f[i];
    if (n.length === name.length && n.toLowerCase() === name) return f[i + 1];
  }
  return undefined;
}
