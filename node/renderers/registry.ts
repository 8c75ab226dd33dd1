/** Renderer name → adapter. */
import type { RendererAdapter } from './adapter.js'
import { blenderAdapter } from './blender.js'
import { builtinAdapter } from './builtin.js'
import { commandAdapter } from './command.js'
import { povrayAdapter } from './povray.js'
import { RENDERER_NAMES } from '../jobs/requirements.js'

export class UnknownRendererError extends Error {
  constructor (name: string) {
    super(`unknown renderer "${name}" (known: ${RENDERER_NAMES.join(', ')})`)
    this.name = 'UnknownRendererError'
  }
}

export interface AdapterOptions {
  /** path of builtin-cli.js, run with this Node (`process.execPath`) */
  builtinCli: string
}

export function adapterFor (name: string, opts: AdapterOptions): RendererAdapter {
  switch (name) {
    case 'blender': return blenderAdapter
    case 'povray': return povrayAdapter
    case 'command': return commandAdapter
    case 'builtin': return builtinAdapter(opts.builtinCli)
    default: throw new UnknownRendererError(name)
  }
}
