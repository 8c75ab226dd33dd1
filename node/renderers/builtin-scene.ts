/**
 * The built-in renderer's scene format and its validation.
 *
 * Scenes arrive from other peers, so everything is checked here, once, at
 * the boundary: the ray tracer then trusts a `BuiltinScene` completely.
 * Errors name the offending field path so a job author can fix the file.
 */

export type Vec3 = [number, number, number]

export interface CameraKeyframe {
  frame: number
  position: Vec3
  lookAt: Vec3
  /** vertical field of view in degrees */
  fov: number
}

export interface Light {
  position: Vec3
  color: Vec3
  intensity: number
}

export interface SphereKeyframe {
  frame: number
  center: Vec3
}

export interface Sphere {
  type: 'sphere'
  center: Vec3
  radius: number
  color: Vec3
  /** 0 = matte, 1 = perfect mirror */
  reflect: number
  /** when present, the centre is interpolated from these instead of `center` */
  keyframes?: SphereKeyframe[]
}

export interface Plane {
  type: 'plane'
  point: Vec3
  /** unit length after parsing */
  normal: Vec3
  color: Vec3
  /** second colour of a checkerboard of unit squares */
  checker?: Vec3
  reflect: number
}

export type SceneObject = Sphere | Plane

export interface BuiltinScene {
  version: 1
  width: number
  height: number
  background: Vec3
  camera: { keyframes: CameraKeyframe[] }
  lights: Light[]
  objects: SceneObject[]
}

export const SCENE_LIMITS = {
  maxObjects: 1000,
  maxLights: 16,
  maxKeyframes: 10000,
  maxDimension: 4096
} as const

export class SceneError extends Error {
  override name = 'SceneError'
}

type Obj = Record<string, unknown>

function fail (path: string, message: string): never {
  throw new SceneError(`${path === '' ? 'scene' : path}: ${message}`)
}

function isObject (value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function object (value: unknown, path: string, allowed: readonly string[]): Obj {
  if (!isObject(value)) fail(path, 'must be an object')
  // Unknown keys are rejected so that a typo (`radus`) is reported instead of
  // silently falling back to a default.
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(join(path, key), 'unknown field')
  }
  return value
}

function join (path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}

function number (value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(path, 'must be a finite number')
  return value
}

function positive (value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) fail(path, 'must be a positive number')
  return value
}

function unit (value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) fail(path, 'must be a number from 0 to 1')
  return value
}

function integer (value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(path, `must be an integer from ${min} to ${max}`)
  }
  return value
}

function vec3 (value: unknown, path: string): Vec3 {
  if (!Array.isArray(value) || value.length !== 3) fail(path, 'must be an array of 3 numbers')
  return [number(value[0], `${path}[0]`), number(value[1], `${path}[1]`), number(value[2], `${path}[2]`)]
}

function color (value: unknown, path: string): Vec3 {
  if (!Array.isArray(value) || value.length !== 3) fail(path, 'must be an array of 3 numbers from 0 to 1')
  return [unit(value[0], `${path}[0]`), unit(value[1], `${path}[1]`), unit(value[2], `${path}[2]`)]
}

function array (value: unknown, path: string, min: number, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, 'must be an array')
  if (value.length < min || value.length > max) {
    fail(path, min === 0 ? `must have at most ${max} entries` : `must have ${min} to ${max} entries`)
  }
  return value
}

/** Keyframes must be strictly increasing so interpolation never has to guess. */
function checkFrameOrder (frames: Array<{ frame: number }>, path: string): void {
  for (let i = 1; i < frames.length; i++) {
    if (frames[i].frame <= frames[i - 1].frame) {
      fail(`${path}[${i}].frame`, 'keyframes must be in strictly increasing frame order')
    }
  }
}

function cameraKeyframe (value: unknown, path: string): CameraKeyframe {
  const o = object(value, path, ['frame', 'position', 'lookAt', 'fov'])
  const frame = number(o.frame, `${path}.frame`)
  const position = vec3(o.position, `${path}.position`)
  const lookAt = vec3(o.lookAt, `${path}.lookAt`)
  if (position[0] === lookAt[0] && position[1] === lookAt[1] && position[2] === lookAt[2]) {
    fail(`${path}.lookAt`, 'must differ from position')
  }
  const fov = number(o.fov, `${path}.fov`)
  if (fov <= 0 || fov >= 180) fail(`${path}.fov`, 'must be between 0 and 180 degrees (exclusive)')
  return { frame, position, lookAt, fov }
}

function light (value: unknown, path: string): Light {
  const o = object(value, path, ['position', 'color', 'intensity'])
  const intensity = o.intensity === undefined ? 1 : number(o.intensity, `${path}.intensity`)
  if (intensity < 0) fail(`${path}.intensity`, 'must not be negative')
  return {
    position: vec3(o.position, `${path}.position`),
    color: o.color === undefined ? [1, 1, 1] : color(o.color, `${path}.color`),
    intensity
  }
}

function reflect (value: unknown, path: string): number {
  return value === undefined ? 0 : unit(value, path)
}

function sphere (o: Obj, path: string): Sphere {
  object(o, path, ['type', 'center', 'radius', 'color', 'reflect', 'keyframes'])
  const result: Sphere = {
    type: 'sphere',
    center: vec3(o.center, `${path}.center`),
    radius: positive(o.radius, `${path}.radius`),
    color: color(o.color, `${path}.color`),
    reflect: reflect(o.reflect, `${path}.reflect`)
  }
  if (o.keyframes !== undefined) {
    const list = array(o.keyframes, `${path}.keyframes`, 1, SCENE_LIMITS.maxKeyframes)
    result.keyframes = list.map((k, i) => {
      const p = `${path}.keyframes[${i}]`
      const kf = object(k, p, ['frame', 'center'])
      return { frame: number(kf.frame, `${p}.frame`), center: vec3(kf.center, `${p}.center`) }
    })
    checkFrameOrder(result.keyframes, `${path}.keyframes`)
  }
  return result
}

function plane (o: Obj, path: string): Plane {
  object(o, path, ['type', 'point', 'normal', 'color', 'checker', 'reflect'])
  const n = vec3(o.normal, `${path}.normal`)
  const len = Math.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
  if (len === 0) fail(`${path}.normal`, 'must not be the zero vector')
  const result: Plane = {
    type: 'plane',
    point: vec3(o.point, `${path}.point`),
    normal: [n[0] / len, n[1] / len, n[2] / len],
    color: color(o.color, `${path}.color`),
    reflect: reflect(o.reflect, `${path}.reflect`)
  }
  if (o.checker !== undefined) result.checker = color(o.checker, `${path}.checker`)
  return result
}

function sceneObject (value: unknown, path: string): SceneObject {
  if (!isObject(value)) fail(path, 'must be an object')
  if (value.type === 'sphere') return sphere(value, path)
  if (value.type === 'plane') return plane(value, path)
  return fail(`${path}.type`, 'must be "sphere" or "plane"')
}

/**
 * Checks an untrusted JSON value and returns a fresh, fully-defaulted scene
 * (the input is never aliased, so later mutation of it cannot reach a render).
 */
export function parseBuiltinScene (json: unknown): BuiltinScene {
  const root = object(json, '', ['version', 'width', 'height', 'background', 'camera', 'lights', 'objects'])
  if (root.version !== 1) fail('version', 'must be 1')
  const width = integer(root.width, 'width', 1, SCENE_LIMITS.maxDimension)
  const height = integer(root.height, 'height', 1, SCENE_LIMITS.maxDimension)
  const background = root.background === undefined ? [0, 0, 0] as Vec3 : color(root.background, 'background')

  const camera = object(root.camera, 'camera', ['keyframes'])
  const keyframes = array(camera.keyframes, 'camera.keyframes', 1, SCENE_LIMITS.maxKeyframes)
    .map((k, i) => cameraKeyframe(k, `camera.keyframes[${i}]`))
  checkFrameOrder(keyframes, 'camera.keyframes')

  const lights = root.lights === undefined
    ? []
    : array(root.lights, 'lights', 0, SCENE_LIMITS.maxLights).map((l, i) => light(l, `lights[${i}]`))
  const objects = array(root.objects, 'objects', 0, SCENE_LIMITS.maxObjects).map((o, i) => sceneObject(o, `objects[${i}]`))

  return { version: 1, width, height, background, camera: { keyframes }, lights, objects }
}
