/**
 * A contact sheet: rendered frames as a grid of thumbnails in one PNG, in
 * the order given (left to right, top to bottom). The demo shows it as its
 * preview of the animation.
 */
import { readFileSync } from 'node:fs'
import { decodePng, encodePng, type RgbaImage } from './png.js'

export interface ContactSheetOptions {
  /** thumbnails per row; default min(frames, 8) */
  columns?: number
  /** thumbnail width in pixels; heights keep each frame's aspect ratio. Default 160 */
  thumbWidth?: number
}

export class ContactSheetError extends Error {
  override name = 'ContactSheetError'
}

/** Pixels between thumbnails and around the edge. */
const GAP = 4
const BACKGROUND = [24, 24, 24, 255]

/**
 * Box-filter resize: each target pixel averages the source pixels it covers
 * (at least one, so enlarging degrades to nearest neighbour). Integer maths
 * only, so it is exact and deterministic.
 */
export function downscale (img: RgbaImage, width: number, height: number): RgbaImage {
  const out = Buffer.alloc(width * height * 4)
  for (let ty = 0; ty < height; ty++) {
    const y0 = Math.floor((ty * img.height) / height)
    const y1 = Math.max(y0 + 1, Math.floor(((ty + 1) * img.height) / height))
    for (let tx = 0; tx < width; tx++) {
      const x0 = Math.floor((tx * img.width) / width)
      const x1 = Math.max(x0 + 1, Math.floor(((tx + 1) * img.width) / width))
      let r = 0; let g = 0; let b = 0; let a = 0
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = (y * img.width + x) * 4
          r += img.rgba[i]; g += img.rgba[i + 1]; b += img.rgba[i + 2]; a += img.rgba[i + 3]
        }
      }
      const n = (y1 - y0) * (x1 - x0)
      const o = (ty * width + tx) * 4
      out[o] = Math.round(r / n); out[o + 1] = Math.round(g / n); out[o + 2] = Math.round(b / n); out[o + 3] = Math.round(a / n)
    }
  }
  return { width, height, rgba: out }
}

/** Lays decoded images out in a grid; split from `contactSheet` so it needs no files. */
export function contactSheetImage (images: RgbaImage[], opts: ContactSheetOptions = {}): RgbaImage {
  if (images.length === 0) throw new ContactSheetError('no frames to put on the contact sheet')
  const columns = opts.columns ?? Math.min(images.length, 8)
  const thumbWidth = opts.thumbWidth ?? 160
  if (!Number.isInteger(columns) || columns < 1) throw new ContactSheetError(`columns must be a positive integer, got ${columns}`)
  if (!Number.isInteger(thumbWidth) || thumbWidth < 1 || thumbWidth > 4096) {
    throw new ContactSheetError(`thumbWidth must be an integer from 1 to 4096, got ${thumbWidth}`)
  }
  const thumbs = images.map(img => downscale(img, thumbWidth, Math.max(1, Math.round((img.height * thumbWidth) / img.width))))
  const cellHeight = Math.max(...thumbs.map(t => t.height))
  const cols = Math.min(columns, thumbs.length)
  const rows = Math.ceil(thumbs.length / cols)
  const width = GAP + cols * (thumbWidth + GAP)
  const height = GAP + rows * (cellHeight + GAP)
  const rgba = Buffer.alloc(width * height * 4)
  for (let i = 0; i < rgba.length; i += 4) rgba.set(BACKGROUND, i)
  thumbs.forEach((thumb, n) => {
    const left = GAP + (n % cols) * (thumbWidth + GAP)
    const top = GAP + Math.floor(n / cols) * (cellHeight + GAP)
    for (let y = 0; y < thumb.height; y++) {
      const src = y * thumb.width * 4
      thumb.rgba.copy(rgba, ((top + y) * width + left) * 4, src, src + thumb.width * 4)
    }
  })
  return { width, height, rgba }
}

/** Reads the PNG frames and returns the contact sheet as PNG bytes. */
export function contactSheet (pngPaths: string[], opts: ContactSheetOptions = {}): Buffer {
  const images = pngPaths.map(path => decodePng(readFileSync(path)))
  return encodePng(contactSheetImage(images, opts))
}
