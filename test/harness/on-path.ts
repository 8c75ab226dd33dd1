import { accessSync, constants } from 'node:fs'
import path from 'node:path'

/** Is an executable named `bin` on PATH? (tests skip what this machine cannot run) */
export function onPath (bin: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
    try {
      accessSync(path.join(dir, bin), constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}
