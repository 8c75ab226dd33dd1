import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from '../node/errors.js'
import { defaultDataDir } from '../storage/data-dir.js'

/**
 * One CLI command: its flags (parsed strictly, so an unknown flag is a usage
 * error naming it) and what it does. Commands only parse and print; the work
 * happens in the node behind its API.
 */
export type Options = NonNullable<ParseArgsConfig['options']>

export interface Parsed {
  values: Record<string, any>
  positionals: string[]
  data: string
  json: boolean
}

export interface Command {
  name: string
  summary: string
  usage: string
  options: Options
  /** positional arguments: [min, max] */
  positionals?: [number, number]
  run: (p: Parsed, out: Output) => Promise<number | void>
}

export interface Output {
  print: (text: string) => void
  json: (value: unknown) => void
  error: (text: string) => void
}

export const COMMON: Options = {
  data: { type: 'string' },
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' }
}

export function parse (cmd: Command, argv: string[], env: NodeJS.ProcessEnv): Parsed {
  let result
  try {
    result = parseArgs({ args: argv, options: { ...COMMON, ...cmd.options }, allowPositionals: true, strict: true, allowNegative: true } as ParseArgsConfig)
  } catch (err: any) {
    throw new UsageError(`${cmd.name}: ${err.message.replace(/\. To specify a positional.*$/s, '')}`)
  }
  const [min, max] = cmd.positionals ?? [0, 0]
  const pos = result.positionals
  if (pos.length < min) throw new UsageError(`${cmd.name}: missing argument (usage: farmesh ${cmd.usage})`)
  if (pos.length > max) throw new UsageError(`${cmd.name}: unexpected argument ${JSON.stringify(pos[max])} (usage: farmesh ${cmd.usage})`)
  const values = result.values as Record<string, any>
  return { values, positionals: pos, data: values.data ?? defaultDataDir(env), json: values.json === true }
}

export function intFlag (value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`)
  return n
}
