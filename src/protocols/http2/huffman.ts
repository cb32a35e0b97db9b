/**
 * The static Huffman code of HPACK (RFC 7541 §5.2, Appendix B) and a table-driven decoder.
 *
 * The code table below is data from the RFC: one [code, bit length] pair per symbol, the code
 * aligned to the least significant bit, symbols 0..255 and EOS (256). The code is canonical: codes
 * of one length are consecutive in symbol order, lengths run 5..30, and the Kraft sum is exactly 1
 * (test/protocols/http2/hpack.test.ts checks all three).
 *
 * Decoding is a byte-at-a-time state machine built once at module load:
 *
 *   state = an internal node of the code tree (256 of them, 0 = root)
 *   TRANSITIONS[state << 8 | byte] = next state | sym1 << 8 | sym2 << 16 | count << 24 | FAIL
 *
 * Codes are at least 5 bits long, so one input byte completes at most two symbols. FAIL marks a
 * byte that walks into EOS (never valid inside a string, RFC 7541 §5.2). After the last byte the
 * string is valid only if the bits since the last symbol are padding: at most 7 bits, all ones (a
 * prefix of EOS), which are exactly the states in ACCEPTING.
 */

// prettier-ignore
const CODE_TABLE: readonly (readonly [number, number])[] = [
  /*   0 */ [0x1ff8, 13], [0x7fffd8, 23], [0xfffffe2, 28], [0xfffffe3, 28],
  /*   4 */ [0xfffffe4, 28], [0xfffffe5, 28], [0xfffffe6, 28], [0xfffffe7, 28],
  /*   8 */ [0xfffffe8, 28], [0xffffea, 24], [0x3ffffffc, 30], [0xfffffe9, 28],
  /*  12 */ [0xfffffea, 28], [0x3ffffffd, 30], [0xfffffeb, 28], [0xfffffec, 28],
  /*  16 */ [0xfffffed, 28], [0xfffffee, 28], [0xfffffef, 28], [0xffffff0, 28],
  /*  20 */ [0xffffff1, 28], [0xffffff2, 28], [0x3ffffffe, 30], [0xffffff3, 28],
  /*  24 */ [0xffffff4, 28], [0xffffff5, 28], [0xffffff6, 28], [0xffffff7, 28],
  /*  28 */ [0xffffff8, 28], [0xffffff9, 28], [0xffffffa, 28], [0xffffffb, 28],
  /*  32 ' ' */ [0x14, 6], /* '!' */ [0x3f8, 10], /* '"' */ [0x3f9, 10], /* '#' */ [0xffa, 12],
  /*  36 '$' */ [0x1ff9, 13], /* '%' */ [0x15, 6], /* '&' */ [0xf8, 8], /* ''' */ [0x7fa, 11],
  /*  40 '(' */ [0x3fa, 10], /* ')' */ [0x3fb, 10], /* '*' */ [0xf9, 8], /* '+' */ [0x7fb, 11],
  /*  44 ',' */ [0xfa, 8], /* '-' */ [0x16, 6], /* '.' */ [0x17, 6], /* '/' */ [0x18, 6],
  /*  48 '0' */ [0x0, 5], /* '1' */ [0x1, 5], /* '2' */ [0x2, 5], /* '3' */ [0x19, 6],
  /*  52 '4' */ [0x1a, 6], /* '5' */ [0x1b, 6], /* '6' */ [0x1c, 6], /* '7' */ [0x1d, 6],
  /*  56 '8' */ [0x1e, 6], /* '9' */ [0x1f, 6], /* ':' */ [0x5c, 7], /* ';' */ [0xfb, 8],
  /*  60 '<' */ [0x7ffc, 15], /* '=' */ [0x20, 6], /* '>' */ [0xffb, 12], /* '?' */ [0x3fc, 10],
  /*  64 '@' */ [0x1ffa, 13], /* 'A' */ [0x21, 6], /* 'B' */ [0x5d, 7], /* 'C' */ [0x5e, 7],
  /*  68 'D' */ [0x5f, 7], /* 'E' */ [0x60, 7], /* 'F' */ [0x61, 7], /* 'G' */ [0x62, 7],
  /*  72 'H' */ [0x63, 7], /* 'I' */ [0x64, 7], /* 'J' */ [0x65, 7], /* 'K' */ [0x66, 7],
  /*  76 'L' */ [0x67, 7], /* 'M' */ [0x68, 7], /* 'N' */ [0x69, 7], /* 'O' */ [0x6a, 7],
  /*  80 'P' */ [0x6b, 7], /* 'Q' */ [0x6c, 7], /* 'R' */ [0x6d, 7], /* 'S' */ [0x6e, 7],
  /*  84 'T' */ [0x6f, 7], /* 'U' */ [0x70, 7], /* 'V' */ [0x71, 7], /* 'W' */ [0x72, 7],
  /*  88 'X' */ [0xfc, 8], /* 'Y' */ [0x73, 7], /* 'Z' */ [0xfd, 8], /* '[' */ [0x1ffb, 13],
  /*  92 '\' */ [0x7fff0, 19], /* ']' */ [0x1ffc, 13], /* '^' */ [0x3ffc, 14], /* '_' */ [0x22, 6],
  /*  96 '`' */ [0x7ffd, 15], /* 'a' */ [0x3, 5], /* 'b' */ [0x23, 6], /* 'c' */ [0x4, 5],
  /* 100 'd' */ [0x24, 6], /* 'e' */ [0x5, 5], /* 'f' */ [0x25, 6], /* 'g' */ [0x26, 6],
  /* 104 'h' */ [0x27, 6], /* 'i' */ [0x6, 5], /* 'j' */ [0x74, 7], /* 'k' */ [0x75, 7],
  /* 108 'l' */ [0x28, 6], /* 'm' */ [0x29, 6], /* 'n' */ [0x2a, 6], /* 'o' */ [0x7, 5],
  /* 112 'p' */ [0x2b, 6], /* 'q' */ [0x76, 7], /* 'r' */ [0x2c, 6], /* 's' */ [0x8, 5],
  /* 116 't' */ [0x9, 5], /* 'u' */ [0x2d, 6], /* 'v' */ [0x77, 7], /* 'w' */ [0x78, 7],
  /* 120 'x' */ [0x79, 7], /* 'y' */ [0x7a, 7], /* 'z' */ [0x7b, 7], /* '{' */ [0x7ffe, 15],
  /* 124 '|' */ [0x7fc, 11], /* '}' */ [0x3ffd, 14], /* '~' */ [0x1ffd, 13], [0xffffffc, 28],
  /* 128 */ [0xfffe6, 20], [0x3fffd2, 22], [0xfffe7, 20], [0xfffe8, 20],
  /* 132 */ [0x3fffd3, 22], [0x3fffd4, 22], [0x3fffd5, 22], [0x7fffd9, 23],
  /* 136 */ [0x3fffd6, 22], [0x7fffda, 23], [0x7fffdb, 23], [0x7fffdc, 23],
  /* 140 */ [0x7fffdd, 23], [0x7fffde, 23], [0xffffeb, 24], [0x7fffdf, 23],
  /* 144 */ [0xffffec, 24], [0xffffed, 24], [0x3fffd7, 22], [0x7fffe0, 23],
  /* 148 */ [0xffffee, 24], [0x7fffe1, 23], [0x7fffe2, 23], [0x7fffe3, 23],
  /* 152 */ [0x7fffe4, 23], [0x1fffdc, 21], [0x3fffd8, 22], [0x7fffe5, 23],
  /* 156 */ [0x3fffd9, 22], [0x7fffe6, 23], [0x7fffe7, 23], [0xffffef, 24],
  /* 160 */ [0x3fffda, 22], [0x1fffdd, 21], [0xfffe9, 20], [0x3fffdb, 22],
  /* 164 */ [0x3fffdc, 22], [0x7fffe8, 23], [0x7fffe9, 23], [0x1fffde, 21],
  /* 168 */ [0x7fffea, 23], [0x3fffdd, 22], [0x3fffde, 22], [0xfffff0, 24],
  /* 172 */ [0x1fffdf, 21], [0x3fffdf, 22], [0x7fffeb, 23], [0x7fffec, 23],
  /* 176 */ [0x1fffe0, 21], [0x1fffe1, 21], [0x3fffe0, 22], [0x1fffe2, 21],
  /* 180 */ [0x7fffed, 23], [0x3fffe1, 22], [0x7fffee, 23], [0x7fffef, 23],
  /* 184 */ [0xfffea, 20], [0x3fffe2, 22], [0x3fffe3, 22], [0x3fffe4, 22],
  /* 188 */ [0x7ffff0, 23], [0x3fffe5, 22], [0x3fffe6, 22], [0x7ffff1, 23],
  /* 192 */ [0x3ffffe0, 26], [0x3ffffe1, 26], [0xfffeb, 20], [0x7fff1, 19],
  /* 196 */ [0x3fffe7, 22], [0x7ffff2, 23], [0x3fffe8, 22], [0x1ffffec, 25],
  /* 200 */ [0x3ffffe2, 26], [0x3ffffe3, 26], [0x3ffffe4, 26], [0x7ffffde, 27],
  /* 204 */ [0x7ffffdf, 27], [0x3ffffe5, 26], [0xfffff1, 24], [0x1ffffed, 25],
  /* 208 */ [0x7fff2, 19], [0x1fffe3, 21], [0x3ffffe6, 26], [0x7ffffe0, 27],
  /* 212 */ [0x7ffffe1, 27], [0x3ffffe7, 26], [0x7ffffe2, 27], [0xfffff2, 24],
  /* 216 */ [0x1fffe4, 21], [0x1fffe5, 21], [0x3ffffe8, 26], [0x3ffffe9, 26],
  /* 220 */ [0xffffffd, 28], [0x7ffffe3, 27], [0x7ffffe4, 27], [0x7ffffe5, 27],
  /* 224 */ [0xfffec, 20], [0xfffff3, 24], [0xfffed, 20], [0x1fffe6, 21],
  /* 228 */ [0x3fffe9, 22], [0x1fffe7, 21], [0x1fffe8, 21], [0x7ffff3, 23],
  /* 232 */ [0x3fffea, 22], [0x3fffeb, 22], [0x1ffffee, 25], [0x1ffffef, 25],
  /* 236 */ [0xfffff4, 24], [0xfffff5, 24], [0x3ffffea, 26], [0x7ffff4, 23],
  /* 240 */ [0x3ffffeb, 26], [0x7ffffe6, 27], [0x3ffffec, 26], [0x3ffffed, 26],
  /* 244 */ [0x7ffffe7, 27], [0x7ffffe8, 27], [0x7ffffe9, 27], [0x7ffffea, 27],
  /* 248 */ [0x7ffffeb, 27], [0xffffffe, 28], [0x7ffffec, 27], [0x7ffffed, 27],
  /* 252 */ [0x7ffffee, 27], [0x7ffffef, 27], [0x7fffff0, 27], [0x3ffffee, 26],
  /* 256 EOS */ [0x3fffffff, 30],
];

export const EOS = 256;
/** HUFFMAN_CODES[sym]: the code, aligned to the least significant bit. */
export const HUFFMAN_CODES: Uint32Array = Uint32Array.from(CODE_TABLE, (e) => e[0]);
/** HUFFMAN_LENGTHS[sym]: the code's length in bits. */
export const HUFFMAN_LENGTHS: Uint8Array = Uint8Array.from(CODE_TABLE, (e) => e[1]);

const FAIL = 1 << 26;
const TRANSITIONS = new Uint32Array(256 * 256);
const ACCEPTING = new Uint8Array(256);

/**
 * Builds the code tree, then the byte transitions. Throws at module load if the table is not a
 * complete prefix code (a mistyped row), which is a bug of ours, not bad input.
 */
function build(): void {
  if (CODE_TABLE.length !== 257) throw new Error(`huffman: ${CODE_TABLE.length} symbols, expected 257`);
  // child[node * 2 + bit]: >= 0 an internal node, < 0 the leaf of symbol -(child + 1); 0 unset
  // (node 0 is the root, which is never anyone's child).
  const child = new Int32Array(512);
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    const code = HUFFMAN_CODES[sym];
    const len = HUFFMAN_LENGTHS[sym];
    if (len < 5 || len > 30 || code >= 2 ** len) throw new Error(`huffman: bad row for symbol ${sym}`);
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const slot = node * 2 + ((code >>> i) & 1);
      const c = child[slot];
      if (c < 0) throw new Error(`huffman: code of symbol ${sym} extends the code of symbol ${-c - 1}`);
      if (i === 0) {
        if (c !== 0) throw new Error(`huffman: code of symbol ${sym} is a prefix of another`);
        child[slot] = -(sym + 1);
      } else if (c === 0) {
        if (nodes === 256) throw new Error('huffman: more than 256 internal nodes');
        child[slot] = nodes;
        node = nodes++;
      } else {
        node = c;
      }
    }
  }
  for (let i = 0; i < nodes * 2; i++) if (child[i] === 0) throw new Error('huffman: the code is not complete');
  if (nodes !== 256) throw new Error(`huffman: ${nodes} internal nodes, expected 256`);

  // Padding states: the root, and the all-ones path from it up to 7 bits deep.
  ACCEPTING[0] = 1;
  for (let node = 0, depth = 1; depth <= 7; depth++) {
    node = child[node * 2 + 1];
    ACCEPTING[node] = 1;
  }

  for (let state = 0; state < 256; state++) {
    for (let byte = 0; byte < 256; byte++) {
      let node = state;
      let count = 0;
      let syms = 0;
      let fail = 0;
      for (let i = 7; i >= 0; i--) {
        const c = child[node * 2 + ((byte >>> i) & 1)];
        if (c >= 0) { node = c; continue; }
        const sym = -c - 1;
        if (sym === EOS) { fail = FAIL; break; }
        syms |= sym << (8 * count);
        count++;
        node = 0;
      }
      TRANSITIONS[(state << 8) | byte] = fail ? FAIL : node | (syms << 8) | (count << 24);
    }
  }
}
build();

let scratch = Buffer.allocUnsafe(1024);

type Latin1 = { latin1Slice(start: number, end: number): string };

/**
 * Decodes the Huffman-coded string src[start, end) as latin1. Returns null when the bits are not
 * a valid HPACK Huffman string: EOS inside, padding longer than 7 bits or not all ones.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number): string | null {
  // every symbol takes at least 5 bits
  const most = (((end - start) * 8) / 5) | 0;
  if (scratch.length < most) scratch = Buffer.allocUnsafe(Math.max(most, scratch.length * 2));
  const out = scratch;
  const t = TRANSITIONS;
  let state = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const e = t[(state << 8) | src[i]];
    if (e & FAIL) return null;
    const count = e >>> 24;
    if (count !== 0) {
      out[n++] = e >>> 8;
      if (count === 2) out[n++] = e >>> 16;
    }
    state = e & 0xff;
  }
  if (ACCEPTING[state] === 0) return null;
  if (n <= 6) {
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(out[i]);
    return s;
  }
  return (out as unknown as Latin1).latin1Slice(0, n);
}

/** Bytes that huffmanEncode(str) takes. Characters are taken as latin1 (low byte). */
export function huffmanEncodedLength(str: string): number {
  let bits = 0;
  for (let i = 0; i < str.length; i++) bits += HUFFMAN_LENGTHS[str.charCodeAt(i) & 0xff];
  return (bits + 7) >>> 3;
}

/**
 * Writes the Huffman code of str (latin1) into dst at offset, padded with ones (a prefix of EOS),
 * and returns the offset after it. dst must have huffmanEncodedLength(str) bytes free.
 */
export function huffmanEncodeInto(str: string, dst: Uint8Array, offset: number): number {
  let p = offset;
  // acc holds fewer than 8 pending bits plus one code (at most 37 bits): exact in a double.
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < str.length; i++) {
    const sym = str.charCodeAt(i) & 0xff;
    const len = HUFFMAN_LENGTHS[sym];
    acc = acc * (1 << len) + HUFFMAN_CODES[sym];
    bits += len;
    while (bits >= 8) {
      bits -= 8;
      const div = 2 ** bits;
      const top = Math.floor(acc / div);
      dst[p++] = top & 0xff;
      acc -= top * div;
    }
  }
  if (bits > 0) dst[p++] = ((acc << (8 - bits)) | (0xff >>> bits)) & 0xff;
  return p;
}

export function huffmanEncode(str: string): Buffer {
  const out = Buffer.allocUnsafe(huffmanEncodedLength(str));
  huffmanEncodeInto(str, out, 0);
  return out;
}
