/**
 * The demo animation: the camera orbits a few coloured, reflective spheres
 * over a checkered floor while a small green sphere bounces, so every frame
 * differs visibly from the previous one and a contact sheet shows motion.
 */
import type { BuiltinScene, CameraKeyframe, SphereKeyframe } from './builtin-scene.js'

/**
 * Rounded so the JSON stays short and does not depend on the last bit of
 * this machine's sin/cos (the scene file is what peers share, not this code).
 */
function r4 (x: number): number {
  return Math.round(x * 1e4) / 1e4 + 0 // `+ 0` turns -0 into 0
}

export function demoScene (frames = 48): BuiltinScene {
  if (!Number.isInteger(frames) || frames < 2) throw new RangeError(`demoScene needs at least 2 frames, got ${frames}`)
  const camera: CameraKeyframe[] = []
  const bounce: SphereKeyframe[] = []
  for (let f = 1; f <= frames; f++) {
    const phase = (f - 1) / frames // a full loop, so the last frame leads back into the first
    const angle = 2 * Math.PI * phase
    camera.push({
      frame: f,
      position: [r4(9 * Math.sin(angle)), r4(3.2 + 0.6 * Math.sin(2 * angle)), r4(9 * Math.cos(angle))],
      lookAt: [0, 1, 0],
      fov: 45
    })
    // |sin| is a ball bounce: fast at the floor, slow at the top; two bounces per loop.
    bounce.push({ frame: f, center: [0.4, r4(0.6 + 2.2 * Math.abs(Math.sin(2 * Math.PI * phase))), 1.9] })
  }
  return {
    version: 1,
    width: 320,
    height: 180,
    background: [0.55, 0.7, 0.9],
    camera: { keyframes: camera },
    lights: [
      { position: [5, 8, 5], color: [1, 0.95, 0.85], intensity: 0.9 },
      { position: [-6, 5, -3], color: [0.7, 0.8, 1], intensity: 0.35 }
    ],
    objects: [
      { type: 'plane', point: [0, 0, 0], normal: [0, 1, 0], color: [0.9, 0.9, 0.88], checker: [0.15, 0.15, 0.18], reflect: 0.15 },
      { type: 'sphere', center: [-2.1, 1, 0], radius: 1, color: [0.85, 0.15, 0.12], reflect: 0.25 },
      { type: 'sphere', center: [2.1, 1, -0.4], radius: 1, color: [0.15, 0.3, 0.85], reflect: 0.25 },
      { type: 'sphere', center: [0, 1.3, -2.3], radius: 1.3, color: [0.92, 0.92, 0.95], reflect: 0.7 },
      { type: 'sphere', center: [1.5, 0.4, 2.4], radius: 0.4, color: [0.95, 0.75, 0.2], reflect: 0.35 },
      { type: 'sphere', center: bounce[0].center, radius: 0.6, color: [0.2, 0.8, 0.3], reflect: 0.2, keyframes: bounce }
    ]
  }
}
