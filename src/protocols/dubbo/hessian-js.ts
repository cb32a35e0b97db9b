/**
 * Typed access to the parts of hessian.js (no bundled types) that the Dubbo codec uses: the Hessian 2.0
 * encoder for arbitrary values and the decoder for full decoding on demand.
 */

/** hessian.js value conventions: plain JS values, or `{ $class: 'java.type', $: value }` for Java types. */
export type HessianValue = unknown;

export interface HessianEncoderV2 {
  write(value: HessianValue): HessianEncoderV2;
  writeString(value: string): HessianEncoderV2;
  writeInt(value: number): HessianEncoderV2;
  writeNull(): HessianEncoderV2;
  get(): Buffer;
  reset(): HessianEncoderV2;
}

export interface HessianDecoderV2 {
  read(withType?: boolean): unknown;
  position(): number;
  position(n: number): HessianDecoderV2;
}

interface HessianModule {
  EncoderV2: new (options?: { size?: number }) => HessianEncoderV2;
  DecoderV2: new (buf: Buffer) => HessianDecoderV2;
}

const hessian = require('hessian.js') as HessianModule;

export function newEncoder(): HessianEncoderV2 {
  return new hessian.EncoderV2();
}

export function newDecoder(buf: Buffer): HessianDecoderV2 {
  return new hessian.DecoderV2(buf);
}
