import { runDemo } from '../demo-runner.js'
import { intFlag, type Command } from '../command.js'

export const demo: Command = {
  name: 'demo',
  summary: 'start 3 nodes on this machine, render a 48-frame animation across them, write ./farmesh-demo/',
  usage: 'demo [--out DIR] [--nodes N] [--frames N] [--slots N] [--json]',
  options: {
    out: { type: 'string' },
    nodes: { type: 'string' },
    frames: { type: 'string' },
    slots: { type: 'string' }
  },
  async run ({ values: v, json }, out) {
    const res = await runDemo({
      outDir: v.out ?? 'farmesh-demo',
      nodes: intFlag(v.nodes, '--nodes', 1, 16) ?? 3,
      frames: intFlag(v.frames, '--frames', 1, 10_000) ?? 48,
      slots: intFlag(v.slots, '--slots', 1, 64) ?? 1,
      print: json ? () => {} : out.print,
      live: !json && process.stdout.isTTY === true
    })
    if (json) out.json(res)
  }
}
