/**
 * A minimal animated GIF89a encoder: fixed 6x6x6 colour cube with ordered
 * (Bayer) dithering, LZW-compressed frames, looping forever. A fixed palette
 * keeps it small and deterministic; quality is preview-grade by design.
 */
import type { RgbaImage } from './png.js'

export interface GifOptions {
  /** delay between frames; GIF stores hundredths of a second. Default 100 */
  delayMs?: number
}

export class GifError extends Error {
  override name = 'GifError'
}

/** 4x4 Bayer matrix: thresholds spread evenly in (0, 1) across each 4x4 tile. */
const BAYER = [0, 8, 2, 10, 12, 4, 14, 6, 3, 11, 1, 9, 15, 7, 13, 5].map(v => (v + 0.5) / 16)
const LEVELS = 6
const STEP = 255 / (LEVELS - 1) // 51: palette levels 0, 51, ..., 255

/** 256 RGB triples: the 216-colour cube (index r*36 + g*6 + b), then black padding. */
function palette (): Buffer {
  const table = Buffer.alloc(256 * 3)
  for (let i = 0; i < LEVELS * LEVELS * LEVELS; i++) {
    table[i * 3] = Math.floor(i / 36) * STEP
    table[i * 3 + 1] = (Math.floor(i / 6) % 6) * STEP
    table[i * 3 + 2] = (i % 6) * STEP
  }
  return table
}

function quantize (img: RgbaImage): Uint8Array {
  const out = new Uint8Array(img.width * img.height)
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const t = BAYER[(y & 3) * 4 + (x & 3)]
      const i = (y * img.width + x) * 4
      const r = Math.min(LEVELS - 1, Math.floor(img.rgba[i] / STEP + t))
      const g = Math.min(LEVELS - 1, Math.floor(img.rgba[i + 1] / STEP + t))
      const b = Math.min(LEVELS - 1, Math.floor(img.rgba[i + 2] / STEP + t))
      out[y * img.width + x] = r * 36 + g * 6 + b
    }
  }
  return out
}

/**
 * GIF-flavoured LZW of 8-bit indices: variable code width from 9 to 12 bits,
 * LSB-first bit packing, a clear code whenever the 4096-entry table fills.
 */
export function lzwEncode (indices: Uint8Array): Buffer {
  const CLEAR = 256
  const EOI = 257
  const bytes: number[] = []
  let acc = 0
  let bits = 0
  let size = 9
  const emit = (code: number): void => {
    acc |= code << bits
    bits += size
    while (bits >= 8) {
      bytes.push(acc & 0xff)
      acc >>>= 8
      bits -= 8
    }
  }
  let table = new Map<number, number>()
  let next = EOI + 1
  emit(CLEAR)
  let prefix = indices.length > 0 ? indices[0] : -1
  for (let i = 1; i < indices.length; i++) {
    const key = (prefix << 8) | indices[i]
    const found = table.get(key)
    if (found !== undefined) {
      prefix = found
      continue
    }
    emit(prefix)
    if (next === 4096) {
      emit(CLEAR)
      table = new Map()
      next = EOI + 1
      size = 9
    } else {
      // Widen when the new entry's code no longer fits: the decoder, one entry
      // behind, widens at the same point in the stream.
      if (next >= 1 << size) size++
      table.set(key, next++)
    }
    prefix = indices[i]
  }
  if (prefix >= 0) emit(prefix)
  emit(EOI)
  if (bits > 0) bytes.push(acc & 0xff)
  return Buffer.from(bytes)
}

function u16 (n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16LE(n)
  return b
}

/** Splits image data into the length-prefixed sub-blocks GIF requires, plus the terminator. */
function subBlocks (data: Buffer): Buffer {
  const parts: Buffer[] = []
  for (let i = 0; i < data.length; i += 255) {
    const chunk = data.subarray(i, i + 255)
    parts.push(Buffer.from([chunk.length]), chunk)
  }
  parts.push(Buffer.from([0]))
  return Buffer.concat(parts)
}

export function encodeAnimatedGif (frames: RgbaImage[], opts: GifOptions = {}): Buffer {
  if (frames.length === 0) throw new GifError('no frames')
  const { width, height } = frames[0]
  if (width < 1 || height < 1 || width > 0xffff || height > 0xffff) throw new GifError(`invalid size ${width}x${height}`)
  frames.forEach((f, i) => {
    if (f.width !== width || f.height !== height) throw new GifError(`frame ${i} is ${f.width}x${f.height}, expected ${width}x${height}`)
  })
  const delay = Math.max(0, Math.min(0xffff, Math.round((opts.delayMs ?? 100) / 10)))
  const parts: Buffer[] = [
    Buffer.from('GIF89a', 'ascii'),
    u16(width), u16(height),
    Buffer.from([0xf7, 0, 0]), // global table of 256 colours, 8-bit resolution; background 0; square pixels
    palette(),
    // NETSCAPE2.0 application extension: loop count 0 = forever
    Buffer.from([0x21, 0xff, 0x0b]), Buffer.from('NETSCAPE2.0', 'ascii'), Buffer.from([0x03, 0x01, 0, 0, 0])
  ]
  for (const frame of frames) {
    parts.push(
      Buffer.from([0x21, 0xf9, 0x04, 0x04]), u16(delay), Buffer.from([0, 0]), // graphic control: keep previous, delay
      Buffer.from([0x2c]), u16(0), u16(0), u16(width), u16(height), Buffer.from([0]), // full-frame image, no local table
      Buffer.from([8]), subBlocks(lzwEncode(quantize(frame))) // minimum code size 8
    )
  }
  parts.push(Buffer.from([0x3b]))
  return Buffer.concat(parts)
}
