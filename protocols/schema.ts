import { ProtocolError } from '../node/errors.js'

/**
 * Tiny checks for validating messages at the boundary. They throw a
 * ProtocolError naming the field, so a bad peer's message is refused with a
 * reason that shows up in our logs.
 */
export function obj (v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ProtocolError(`${field}: expected an object`)
  return v as Record<string, unknown>
}

export function str (v: unknown, field: string, max = 1024): string {
  if (typeof v !== 'string' || v.length > max) throw new ProtocolError(`${field}: expected a string of at most ${max} characters`)
  return v
}

export function optStr (v: unknown, field: string, max = 1024): string | undefined {
  return v === undefined || v === null ? undefined : str(v, field, max)
}

export function num (v: unknown, field: string, min = -Number.MAX_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new ProtocolError(`${field}: expected a number from ${min} to ${max}`)
  return v
}

export function int (v: unknown, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = num(v, field, min, max)
  if (!Number.isInteger(n)) throw new ProtocolError(`${field}: expected an integer`)
  return n
}

export function bool (v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ProtocolError(`${field}: expected true or false`)
  return v
}

export function arr<T> (v: unknown, field: string, max: number, item: (x: unknown, field: string) => T): T[] {
  if (!Array.isArray(v) || v.length > max) throw new ProtocolError(`${field}: expected an array of at most ${max} items`)
  return v.map((x, i) => item(x, `${field}[${i}]`))
}

export function oneOf<T extends string> (v: unknown, field: string, values: readonly T[]): T {
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) throw new ProtocolError(`${field}: expected one of ${values.join(', ')}`)
  return v as T
}
