/**
 * Address ranges (CIDR), IPv4 and IPv6, and the test of an address against them.
 *
 * An address is held as four 32-bit words (IPv4: one word), so a test is at most four masked
 * compares. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a dual-stack listener reports
 * for an IPv4 client) is the IPv4 address it maps, and a range written in that form
 * (`::ffff:10.0.0.0/104`) is the IPv4 range: a client cannot step out of an IPv4 range by being
 * seen through an IPv6 socket.
 */
import { isIP } from 'node:net';

export interface IpAddress {
  readonly v4: boolean;
  /** IPv4: one word; IPv6: four, most significant first. */
  readonly words: Uint32Array;
}

export interface CidrRange {
  readonly v4: boolean;
  readonly words: Uint32Array;
  /** Prefix length, in bits of the family (IPv4 0-32, IPv6 0-128). */
  readonly bits: number;
  /** The range as written back canonically (`10.0.0.0/8`, `2001:db8::/32`). */
  readonly text: string;
}

function v4Word(s: string): number {
  const p = s.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

function v6Words(s: string): Uint32Array {
  // a trailing dotted quad (::ffff:1.2.3.4) becomes two groups
  let text = s;
  const dot = text.lastIndexOf('.');
  if (dot >= 0) {
    const colon = text.lastIndexOf(':');
    const w = v4Word(text.slice(colon + 1));
    text = `${text.slice(0, colon + 1)}${(w >>> 16).toString(16)}:${(w & 0xffff).toString(16)}`;
  }
  const halves = text.split('::');
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length > 1 && halves[1] ? halves[1].split(':') : [];
  const groups = [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail].map((g) => parseInt(g, 16));
  const out = new Uint32Array(4);
  for (let i = 0; i < 4; i++) out[i] = ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0;
  return out;
}

/** ::ffff:a.b.c.d → the IPv4 word, else -1. */
function mappedV4(w: Uint32Array): number {
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff ? w[3] : -1;
}

/** An address as a socket reports it; null when it is not an IP literal (or has a zone). */
export function parseIp(s: string): IpAddress | null {
  const family = isIP(s);
  if (family === 4) return { v4: true, words: Uint32Array.of(v4Word(s)) };
  if (family !== 6 || s.includes('%')) return null;
  const w = v6Words(s);
  const m = mappedV4(w);
  return m >= 0 ? { v4: true, words: Uint32Array.of(m) } : { v4: false, words: w };
}

function mask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

function formatV4(w: number): string {
  return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
}

/**
 * `10.0.0.0/8`, `2001:db8::/32`, or a single address (`10.1.2.3` is `/32`, an IPv6 one `/128`).
 * Throws with a message fit for a config error: not an address, a prefix out of range, or bits
 * set past the prefix (`10.0.0.1/8` is more likely a typo than a way to write `10.0.0.0/8`).
 */
export function parseCidr(s: string): CidrRange {
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  const family = isIP(addrText);
  if (family === 0 || addrText.includes('%')) throw new Error(`"${s}" is not an address range: "${addrText}" is not an IPv4 or IPv6 address`);
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw new Error(`"${s}" is not an address range: the prefix length must be 0-${max}`);
    bits = Number(p);
  }
  let v4 = family === 4;
  let words = v4 ? Uint32Array.of(v4Word(addrText)) : v6Words(addrText);
  if (!v4 && bits >= 96 && mappedV4(words) >= 0) {
    v4 = true;
    words = Uint32Array.of(words[3]);
    bits -= 96;
  }
  for (let i = 0; i < words.length; i++) {
    const m = mask(bits - 32 * i);
    if ((words[i] & ~m) >>> 0 !== 0) {
      const fixed = Uint32Array.from(words, (w, j) => (w & mask(bits - 32 * j)) >>> 0);
      throw new Error(`"${s}" has address bits set past the /${slash < 0 ? max : s.slice(slash + 1)} prefix (the range is ${v4 ? formatV4(fixed[0]) : formatV6(fixed)}/${slash < 0 ? max : s.slice(slash + 1)})`);
    }
  }
  const text = `${v4 ? formatV4(words[0]) : formatV6(words)}/${bits}`;
  return { v4, words, bits, text };
}

function formatV6(w: Uint32Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 4; i++) groups.push(w[i] >>> 16, w[i] & 0xffff);
  return ipv6Groups(groups);
}

/**
 * RFC 5952 text of eight 16-bit groups: lower-case hex, the longest run of two or more zero
 * groups written "::" (the first, if several are as long).
 */
export function ipv6Groups(groups: readonly number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (gs: readonly number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

export function inRange(a: IpAddress, r: CidrRange): boolean {
  if (a.v4 !== r.v4) return false;
  const n = a.words.length;
  for (let i = 0; i < n; i++) {
    const m = mask(r.bits - 32 * i);
    if (m === 0) return true;
    if (((a.words[i] & m) >>> 0) !== r.words[i]) return false;
  }
  return true;
}
