import type { ApiClient } from '../api-client.js'
import { connectApi } from '../api-client.js'
import { duration } from '../format.js'
import type { Command, Output } from '../command.js'

const FINISHED = new Set(['done', 'failed', 'killed'])

function bar (fraction: number, width = 30): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * width)
  return '[' + '#'.repeat(n) + '-'.repeat(width - n) + ']'
}

/** The lines `farmesh watch` draws: one bar overall, one per running frame. */
export function progressLines (job: any): string[] {
  const f = job.frames as any[]
  const done = f.filter(x => x.state === 'done').length
  const partial = f.filter(x => x.state === 'running').reduce((s, x) => s + (x.progress ?? 0), 0)
  const lines = [`${job.name} (${job.id}) ${job.state}  ${bar((done + partial) / Math.max(1, f.length))} ${done}/${f.length} frames`]
  for (const t of (job.tasks as any[]).filter(x => x.state === 'running')) {
    lines.push(`  frame ${t.frames[0]}${t.frames.length > 1 ? `-${t.frames[t.frames.length - 1]}` : ''} on …${String(t.host).slice(-8)}  ${bar(t.progress, 20)} ${Math.round(t.progress * 100)}%`)
  }
  return lines
}

/** Follow a job until it ends; draws live bars on a terminal, a line per change otherwise. */
export async function waitForJob (api: ApiClient, id: string, out?: Output, intervalMs = 500): Promise<any> {
  const tty = process.stdout.isTTY === true && out != null
  let drawn = 0
  let lastLine = ''
  const started = Date.now()
  while (true) {
    const job = await api.call('GET', `/v1/jobs/${encodeURIComponent(id)}`)
    if (out != null) {
      const lines = progressLines(job)
      if (tty) {
        if (drawn > 0) process.stdout.write(`\x1b[${drawn}A\x1b[J`)
        process.stdout.write(lines.join('\n') + '\n')
        drawn = lines.length
      } else if (lines[0] !== lastLine) {
        out.print(lines[0])
        lastLine = lines[0]
      }
    }
    if (FINISHED.has(job.state)) {
      if (out != null) out.print(`job ${job.id} ${job.state} after ${duration((Date.now() - started) / 1000)}${job.reason != null ? `: ${job.reason}` : ''}`)
      return job
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

export const watch: Command = {
  name: 'watch',
  summary: 'a live progress bar per running frame and one overall, until the job ends',
  usage: 'watch ID [--data DIR]',
  positionals: [1, 1],
  options: {},
  async run ({ data, positionals }, out) {
    const api = await connectApi(data)
    const job = await waitForJob(api, positionals[0], out)
    return job.state === 'done' ? 0 : 1
  }
}
