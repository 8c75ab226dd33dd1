/**
 * The built-in renderer: a small Whitted-style ray tracer (Phong shading,
 * hard shadows, mirror reflections, 2x2 supersampling).
 *
 * Output must be byte-identical for the same input on every machine, so the
 * farm can compare frames rendered by different peers: there is no
 * randomness, samples sit at fixed sub-pixel offsets, and the only
 * transcendental function (tan, for the field of view) runs once per frame.
 * Per-pixel math is + - * /, sqrt and floor, which IEEE 754 defines exactly,
 * so every machine rounds them the same way.
 */
import type { BuiltinScene, CameraKeyframe, Sphere, Vec3 } from './builtin-scene.js'

export const BUILTIN_RENDERER_VERSION = '1.0.0'

export interface RenderedImage {
  width: number
  height: number
  /** width * height * 4 bytes, row-major, top row first */
  rgba: Buffer
}

export interface RenderOptions {
  /** overrides the scene's width */
  width?: number
  /** overrides the scene's height */
  height?: number
  /** called with the fraction of rows done, about every 10% of rows and at 1 */
  onProgress?: (fraction: number) => void
}

/** Pushes secondary rays off the surface they start on (avoids "shadow acne"). */
const EPS = 1e-4
/** How many mirror bounces a primary ray may take. */
const MAX_BOUNCES = 2
const AMBIENT = 0.1
const SPECULAR = 0.5
/** Distance (scene units) over which a checkerboard fades to its mean colour. */
const CHECKER_FADE_START = 12
const CHECKER_FADE_LENGTH = 20
/** Sub-pixel sample positions of the fixed 2x2 grid. */
const SAMPLE_OFFSETS = [0.25, 0.75]

interface FrameSphere {
  cx: number, cy: number, cz: number
  r: number, r2: number
  cr: number, cg: number, cb: number
  reflect: number
}

interface FramePlane {
  px: number, py: number, pz: number
  nx: number, ny: number, nz: number
  /** two in-plane axes, for the checkerboard */
  ux: number, uy: number, uz: number
  vx: number, vy: number, vz: number
  cr: number, cg: number, cb: number
  /** checker colour; equal to the base colour when there is no checkerboard */
  kr: number, kg: number, kb: number
  reflect: number
}

interface FrameLight {
  x: number, y: number, z: number
  /** colour * intensity */
  r: number, g: number, b: number
}

function lerp (a: number, b: number, t: number): number {
  return a + (b - a) * t
}

function lerpVec (a: Vec3, b: Vec3, t: number): Vec3 {
  return [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}

/**
 * The keyframes around `frame` and the blend factor between them, clamped to
 * the first/last keyframe outside their range. Keyframes are sorted (the
 * parser guarantees it) so a binary search suffices.
 */
function bracket<K extends { frame: number }> (keys: K[], frame: number): [K, K, number] {
  if (frame <= keys[0].frame) return [keys[0], keys[0], 0]
  const last = keys[keys.length - 1]
  if (frame >= last.frame) return [last, last, 0]
  let lo = 0
  let hi = keys.length - 1
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1
    if (keys[mid].frame <= frame) lo = mid
    else hi = mid
  }
  const a = keys[lo]
  const b = keys[hi]
  return [a, b, (frame - a.frame) / (b.frame - a.frame)]
}

export function cameraAt (keys: CameraKeyframe[], frame: number): { position: Vec3, lookAt: Vec3, fov: number } {
  const [a, b, t] = bracket(keys, frame)
  return { position: lerpVec(a.position, b.position, t), lookAt: lerpVec(a.lookAt, b.lookAt, t), fov: lerp(a.fov, b.fov, t) }
}

export function sphereCenterAt (sphere: Sphere, frame: number): Vec3 {
  if (sphere.keyframes === undefined) return sphere.center
  const [a, b, t] = bracket(sphere.keyframes, frame)
  return lerpVec(a.center, b.center, t)
}

function normalize (v: Vec3): Vec3 {
  const len = Math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
  return len === 0 ? [0, 0, 0] : [v[0] / len, v[1] / len, v[2] / len]
}

function cross (a: Vec3, b: Vec3): Vec3 {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/** Any unit vector perpendicular to `n` (for plane axes and camera up). */
function perpendicular (n: Vec3): Vec3 {
  const helper: Vec3 = Math.abs(n[1]) < 0.9 ? [0, 1, 0] : [1, 0, 0]
  return normalize(cross(helper, n))
}

/** Scene objects resolved at one frame, and the recursive shading. */
class Tracer {
  private hitT = 0
  private hitSphere: FrameSphere | null = null
  private hitPlane: FramePlane | null = null
  /** the colour result of `trace` (an out-parameter avoids allocating per ray) */
  r = 0
  g = 0
  b = 0

  constructor (
    private readonly spheres: FrameSphere[],
    private readonly planes: FramePlane[],
    private readonly lights: FrameLight[],
    private readonly background: Vec3
  ) {}

  /** Nearest hit along a unit-length ray with EPS < t < tMax; records it in hit*. */
  private intersect (ox: number, oy: number, oz: number, dx: number, dy: number, dz: number, tMax: number): boolean {
    let best = tMax
    let bestSphere: FrameSphere | null = null
    let bestPlane: FramePlane | null = null
    for (const s of this.spheres) {
      const lx = ox - s.cx
      const ly = oy - s.cy
      const lz = oz - s.cz
      const b = lx * dx + ly * dy + lz * dz
      const c = lx * lx + ly * ly + lz * lz - s.r2
      const disc = b * b - c
      if (disc < 0) continue
      const root = Math.sqrt(disc)
      let t = -b - root
      if (t <= EPS) t = -b + root
      if (t > EPS && t < best) {
        best = t
        bestSphere = s
        bestPlane = null
      }
    }
    for (const p of this.planes) {
      const denom = p.nx * dx + p.ny * dy + p.nz * dz
      if (denom === 0) continue
      const t = ((p.px - ox) * p.nx + (p.py - oy) * p.ny + (p.pz - oz) * p.nz) / denom
      if (t > EPS && t < best) {
        best = t
        bestPlane = p
        bestSphere = null
      }
    }
    this.hitT = best
    this.hitSphere = bestSphere
    this.hitPlane = bestPlane
    return bestSphere !== null || bestPlane !== null
  }

  /** Colour seen along a unit-length ray, left in this.r/g/b. */
  trace (ox: number, oy: number, oz: number, dx: number, dy: number, dz: number, depth: number): void {
    if (!this.intersect(ox, oy, oz, dx, dy, dz, Infinity)) {
      this.r = this.background[0]
      this.g = this.background[1]
      this.b = this.background[2]
      return
    }
    const t = this.hitT
    const sphere = this.hitSphere
    const plane = this.hitPlane
    const px = ox + dx * t
    const py = oy + dy * t
    const pz = oz + dz * t
    let nx: number, ny: number, nz: number
    let br: number, bg: number, bb: number
    let reflect: number
    if (sphere !== null) {
      nx = (px - sphere.cx) / sphere.r
      ny = (py - sphere.cy) / sphere.r
      nz = (pz - sphere.cz) / sphere.r
      br = sphere.cr; bg = sphere.cg; bb = sphere.cb
      reflect = sphere.reflect
    } else {
      const p = plane as FramePlane
      nx = p.nx; ny = p.ny; nz = p.nz
      const qx = px - p.px
      const qy = py - p.py
      const qz = pz - p.pz
      const u = Math.floor(qx * p.ux + qy * p.uy + qz * p.uz)
      const v = Math.floor(qx * p.vx + qy * p.vy + qz * p.vz)
      const odd = ((u + v) & 1) === 1
      br = odd ? p.kr : p.cr; bg = odd ? p.kg : p.cg; bb = odd ? p.kb : p.cb
      // Far squares are smaller than a pixel and would alias into moire:
      // fade the checkerboard to its mean colour with distance.
      const fade = t <= CHECKER_FADE_START ? 0 : Math.min(1, (t - CHECKER_FADE_START) / CHECKER_FADE_LENGTH)
      if (fade > 0) {
        br += ((p.cr + p.kr) / 2 - br) * fade
        bg += ((p.cg + p.kg) / 2 - bg) * fade
        bb += ((p.cb + p.kb) / 2 - bb) * fade
      }
      reflect = p.reflect
    }
    // Shade the side facing the viewer (planes are two-sided; the camera may be inside a sphere).
    if (nx * dx + ny * dy + nz * dz > 0) {
      nx = -nx; ny = -ny; nz = -nz
    }
    const sx = px + nx * EPS
    const sy = py + ny * EPS
    const sz = pz + nz * EPS

    let r = AMBIENT * br
    let g = AMBIENT * bg
    let b = AMBIENT * bb
    for (const light of this.lights) {
      let lx = light.x - px
      let ly = light.y - py
      let lz = light.z - pz
      const dist = Math.sqrt(lx * lx + ly * ly + lz * lz)
      if (dist === 0) continue
      lx /= dist; ly /= dist; lz /= dist
      const ndl = nx * lx + ny * ly + nz * lz
      if (ndl <= 0) continue
      if (this.intersect(sx, sy, sz, lx, ly, lz, dist)) continue // in shadow
      // Blinn-Phong highlight: half vector between light and viewer (-d).
      let hx = lx - dx
      let hy = ly - dy
      let hz = lz - dz
      const hl = Math.sqrt(hx * hx + hy * hy + hz * hz)
      let spec = 0
      if (hl > 0) {
        hx /= hl; hy /= hl; hz /= hl
        const ndh = nx * hx + ny * hy + nz * hz
        if (ndh > 0) {
          // ndh^32 by squaring: exact and cheaper than Math.pow
          let s = ndh * ndh; s *= s; s *= s; s *= s; s *= s
          spec = s * SPECULAR
        }
      }
      r += light.r * (ndl * br + spec)
      g += light.g * (ndl * bg + spec)
      b += light.b * (ndl * bb + spec)
    }

    if (reflect > 0 && depth < MAX_BOUNCES) {
      const k = 2 * (dx * nx + dy * ny + dz * nz)
      this.trace(sx, sy, sz, dx - k * nx, dy - k * ny, dz - k * nz, depth + 1)
      r = r * (1 - reflect) + this.r * reflect
      g = g * (1 - reflect) + this.g * reflect
      b = b * (1 - reflect) + this.b * reflect
    }
    this.r = r
    this.g = g
    this.b = b
  }
}

function prepare (scene: BuiltinScene, frame: number): Tracer {
  const spheres: FrameSphere[] = []
  const planes: FramePlane[] = []
  for (const o of scene.objects) {
    if (o.type === 'sphere') {
      const c = sphereCenterAt(o, frame)
      spheres.push({
        cx: c[0], cy: c[1], cz: c[2], r: o.radius, r2: o.radius * o.radius,
        cr: o.color[0], cg: o.color[1], cb: o.color[2], reflect: o.reflect
      })
    } else {
      const u = perpendicular(o.normal)
      const v = cross(o.normal, u)
      const k = o.checker ?? o.color
      planes.push({
        px: o.point[0], py: o.point[1], pz: o.point[2],
        nx: o.normal[0], ny: o.normal[1], nz: o.normal[2],
        ux: u[0], uy: u[1], uz: u[2], vx: v[0], vy: v[1], vz: v[2],
        cr: o.color[0], cg: o.color[1], cb: o.color[2],
        kr: k[0], kg: k[1], kb: k[2], reflect: o.reflect
      })
    }
  }
  const lights: FrameLight[] = scene.lights.map(l => ({
    x: l.position[0], y: l.position[1], z: l.position[2],
    r: l.color[0] * l.intensity, g: l.color[1] * l.intensity, b: l.color[2] * l.intensity
  }))
  return new Tracer(spheres, planes, lights, scene.background)
}

function toByte (v: number): number {
  return v <= 0 ? 0 : v >= 1 ? 255 : Math.round(v * 255)
}

/** Renders one frame of a parsed scene. Pure: same scene + frame + size gives the same bytes. */
export function renderFrame (scene: BuiltinScene, frame: number, opts: RenderOptions = {}): RenderedImage {
  const width = opts.width ?? scene.width
  const height = opts.height ?? scene.height
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new RangeError(`image size must be positive integers, got ${width}x${height}`)
  }
  const tracer = prepare(scene, frame)

  const cam = cameraAt(scene.camera.keyframes, frame)
  let forward = normalize([cam.lookAt[0] - cam.position[0], cam.lookAt[1] - cam.position[1], cam.lookAt[2] - cam.position[2]])
  // Interpolation can bring position and lookAt together even though no keyframe does.
  if (forward[0] === 0 && forward[1] === 0 && forward[2] === 0) forward = [0, 0, -1]
  let right = normalize(cross(forward, [0, 1, 0]))
  if (right[0] === 0 && right[1] === 0 && right[2] === 0) right = perpendicular(forward) // looking straight up/down
  const up = cross(right, forward)
  const halfH = Math.tan((cam.fov * Math.PI) / 360)
  const halfW = halfH * (width / height)
  const [ox, oy, oz] = cam.position

  const rgba = Buffer.alloc(width * height * 4)
  const band = Math.max(1, Math.ceil(height / 10))
  const samples = SAMPLE_OFFSETS.length * SAMPLE_OFFSETS.length
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0
      let g = 0
      let b = 0
      for (const sy of SAMPLE_OFFSETS) {
        const v = (1 - (2 * (y + sy)) / height) * halfH
        for (const sx of SAMPLE_OFFSETS) {
          const u = ((2 * (x + sx)) / width - 1) * halfW
          let dx = forward[0] + u * right[0] + v * up[0]
          let dy = forward[1] + u * right[1] + v * up[1]
          let dz = forward[2] + u * right[2] + v * up[2]
          const len = Math.sqrt(dx * dx + dy * dy + dz * dz)
          dx /= len; dy /= len; dz /= len
          tracer.trace(ox, oy, oz, dx, dy, dz, 0)
          r += tracer.r
          g += tracer.g
          b += tracer.b
        }
      }
      const i = (y * width + x) * 4
      rgba[i] = toByte(r / samples)
      rgba[i + 1] = toByte(g / samples)
      rgba[i + 2] = toByte(b / samples)
      rgba[i + 3] = 255
    }
    if (opts.onProgress !== undefined && ((y + 1) % band === 0 || y + 1 === height)) {
      opts.onProgress((y + 1) / height)
    }
  }
  return { width, height, rgba }
}
