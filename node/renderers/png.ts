/**
 * 8-bit RGBA PNG encoding/decoding (thin wrapper over pngjs's sync API so
 * the rest of the code deals only in `{ width, height, rgba }`).
 */
import { PNG } from 'pngjs'

export interface RgbaImage {
  width: number
  height: number
  /** width * height * 4 bytes, row-major, top row first */
  rgba: Buffer
}

export class PngError extends Error {
  override name = 'PngError'
}

export function encodePng (img: RgbaImage): Buffer {
  if (!Number.isInteger(img.width) || img.width < 1 || !Number.isInteger(img.height) || img.height < 1) {
    throw new PngError(`invalid image size ${img.width}x${img.height}`)
  }
  if (img.rgba.length !== img.width * img.height * 4) {
    throw new PngError(`rgba has ${img.rgba.length} bytes, expected ${img.width * img.height * 4} for ${img.width}x${img.height}`)
  }
  // An empty PNG then assigned fields: avoids pngjs allocating a buffer we would discard.
  const png = new PNG()
  png.width = img.width
  png.height = img.height
  png.data = img.rgba
  return PNG.sync.write(png, { colorType: 6, inputColorType: 6, bitDepth: 8 })
}

/** Any PNG pngjs reads (palette, grey, 16-bit...) comes back as 8-bit RGBA. */
export function decodePng (buf: Buffer): RgbaImage {
  let png
  try {
    png = PNG.sync.read(buf)
  } catch (err) {
    throw new PngError(`not a valid PNG: ${(err as Error).message}`)
  }
  return { width: png.width, height: png.height, rgba: png.data }
}
