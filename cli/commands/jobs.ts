import { connectApi } from '../api-client.js'
import { duration, shortId, table } from '../format.js'
import { UsageError } from '../../node/errors.js'
import type { Command } from '../command.js'

export const jobs: Command = {
  name: 'jobs',
  summary: 'the site\'s queues: queued, active, done, failed, killed jobs in priority order',
  usage: 'jobs [--data DIR] [--json]',
  options: {},
  async run ({ data, json }, out) {
    const api = await connectApi(data)
    const list = await api.call<any[]>('GET', '/v1/jobs')
    if (json) { out.json(list); return }
    out.print(table(['ID', 'NAME', 'STATE', 'PRI', 'FRAMES', 'USER', 'ORIGIN', 'WAITING'], list.map(j => [
      j.id, j.name, j.held === true ? `${j.state} (held)` : j.state, String(j.priority), `${j.frames.done}/${j.frames.total}${j.frames.running > 0 ? ` (${j.frames.running} running)` : ''}${j.frames.failed > 0 ? ` ${j.frames.failed} failed` : ''}`, j.user, shortId(j.origin), j.waiting ?? ''
    ])))
  }
}

export const job: Command = {
  name: 'job',
  summary: 'one job: state, progress, every frame with its host, attempts, times and errors',
  usage: 'job ID [--log FRAME] [--data DIR] [--json]',
  positionals: [1, 1],
  options: { log: { type: 'string' } },
  async run ({ data, json, positionals, values }, out) {
    const api = await connectApi(data)
    const j = await api.call('GET', `/v1/jobs/${encodeURIComponent(positionals[0])}`)
    if (values.log != null) {
      const frame = Number(values.log)
      const t = (j.tasks as any[]).find(x => x.frames.includes(frame))
      if (t == null) throw new UsageError(`--log: job ${j.id} has no frame ${values.log}`)
      if (json) { out.json({ frame, host: t.host, state: t.state, errors: t.errors, logTail: t.logTail, stats: t.stats }); return }
      out.print(`frame ${frame}: ${t.state} on ${t.host ?? '-'} after ${t.attempts} attempt(s)${t.stats != null ? `, exit ${String(t.stats.exitCode)}, ${t.stats.cpuSeconds.toFixed(2)} s CPU, peak ${(t.stats.peakRssBytes / 2 ** 20).toFixed(0)} MiB` : ''}`)
      for (const e of t.errors) out.print(`error: ${e}`)
      for (const line of t.logTail) out.print(`| ${line}`)
      return
    }
    if (json) { out.json(j); return }
    out.print(`job       ${j.id}  ${j.name}`)
    out.print(`state     ${j.state}${j.reason != null ? ` — ${j.reason}` : ''}`)
    out.print(`priority  ${j.priority}   user ${j.user}   renderer ${j.renderer}`)
    out.print(`frames    ${j.frames.filter((f: any) => f.state === 'done').length}/${j.frames.length} done`)
    if (j.waiting != null) out.print(`waiting   ${j.waiting}`)
    out.print('')
    out.print(table(['FRAMES', 'STATE', 'HOST', 'TRIES', 'TIME', 'CPU', 'ERROR'], j.tasks.map((t: any) => [
      t.frames.length > 1 ? `${t.frames[0]}-${t.frames[t.frames.length - 1]}` : String(t.frames[0]),
      t.state === 'running' ? `running ${Math.round(t.progress * 100)}%` : t.state,
      t.host != null ? shortId(t.host) : '-', String(t.attempts),
      t.stats != null ? duration(t.stats.wallSeconds) : '-', t.stats != null ? `${t.stats.cpuSeconds.toFixed(1)}s` : '-',
      t.errors.length > 0 ? t.errors[t.errors.length - 1].slice(0, 80) : ''
    ])))
  }
}

function control (name: string, summary: string, usage: string, positionals: [number, number], options: Command['options'], body: (v: any, p: string[]) => { path: string, body?: unknown }, show: (r: any) => string): Command {
  return {
    name, summary, usage, positionals, options,
    async run ({ data, json, values, positionals: p }, out) {
      const api = await connectApi(data)
      const req = body(values, p)
      const res = await api.call('POST', req.path, req.body ?? {})
      if (json) out.json(res)
      else out.print(show(res))
    }
  }
}

export const kill = control('kill', 'stop a job (its running frames stop everywhere), or with --frames stop those frames and run them again', 'kill ID [--frames F] [--data DIR] [--json]', [1, 1], { frames: { type: 'string' } },
  (v, [id]) => v.frames != null
    ? { path: `/v1/jobs/${encodeURIComponent(id)}/kill-frames`, body: { frames: v.frames } }
    : { path: `/v1/jobs/${encodeURIComponent(id)}/kill` },
  r => r.killed != null ? `job ${r.id}: ${r.killed} running frame(s) stopped and queued again` : `job ${r.id} ${r.state}`)

export const hold = control('hold', 'keep a job\'s frames from starting until it is released', 'hold ID [--data DIR] [--json]', [1, 1], {},
  (_v, [id]) => ({ path: `/v1/jobs/${encodeURIComponent(id)}/hold` }), r => `job ${r.id} held`)

export const release = control('release', 'let a held job\'s frames start again', 'release ID [--data DIR] [--json]', [1, 1], {},
  (_v, [id]) => ({ path: `/v1/jobs/${encodeURIComponent(id)}/release` }), r => `job ${r.id} released`)

export const drain = control('drain', 'a host finishes its running frames and takes no more (--undo to take frames again)', 'drain HOST [--undo] [--data DIR] [--json]', [1, 1], { undo: { type: 'boolean' } },
  (v, [host]) => ({ path: `/v1/hosts/${encodeURIComponent(host)}/${v.undo === true ? 'undrain' : 'drain'}` }), r => r.draining === true ? 'host draining' : 'host takes frames again')

export const stopHost = control('stop-host', 'stop a host\'s node (it leaves the site cleanly)', 'stop-host HOST [--data DIR] [--json]', [1, 1], {},
  (_v, [host]) => ({ path: `/v1/hosts/${encodeURIComponent(host)}/stop` }), () => 'host stopping')

export const retry = control('retry', 'queue a job\'s failed frames (or the named ones) again', 'retry ID [--frames F] [--data DIR] [--json]', [1, 1], { frames: { type: 'string' } },
  (v, [id]) => ({ path: `/v1/jobs/${encodeURIComponent(id)}/retry`, body: { frames: v.frames } }), r => `job ${r.id}: ${r.retried} frame(s) queued again`)

export const priority = control('priority', 'change a job\'s priority (lower is more urgent)', 'priority ID N [--data DIR] [--json]', [2, 2], {},
  (_v, [id, n]) => {
    const p = Number(n)
    if (!Number.isInteger(p) || p < 0 || p > 1000) throw new UsageError(`priority: expected an integer from 0 to 1000, got ${JSON.stringify(n)}`)
    return { path: `/v1/jobs/${encodeURIComponent(id)}/priority`, body: { priority: p } }
  }, r => `job ${r.id} priority ${r.priority}`)

export const fetchOutputs = control('fetch', 'copy a job\'s outputs into DIR (on the host it was submitted from)', 'fetch ID DIR [--data DIR] [--json]', [2, 2], {},
  (_v, [id, dir]) => ({ path: `/v1/jobs/${encodeURIComponent(id)}/fetch`, body: { dir: (dir.startsWith('/') ? dir : `${process.cwd()}/${dir}`) } }), r => `${r.files} file(s) copied to ${r.dir}`)
