import { resolve } from 'node:path'
import { connectApi } from '../api-client.js'
import { intFlag, type Command } from '../command.js'
import { UsageError } from '../../node/errors.js'
import { loadJobSpecFile, validateJobSpec } from '../../node/jobs/job-spec.js'
import { waitForJob } from './watch.js'

/** Build the job spec from a spec file and/or flags; flags win. */
async function specFrom (v: Record<string, any>, positionals: string[]): Promise<Record<string, unknown>> {
  const spec: Record<string, any> = v.spec != null ? { ...(await loadJobSpecFile(v.spec) as object) } : {}
  const [scene, ...files] = positionals
  if (scene != null) spec.scene = resolve(scene)
  if (files.length > 0) spec.files = [...(spec.files ?? []), ...files.map(f => resolve(f))]
  if (v.renderer != null) {
    const [name, version] = String(v.renderer).split('@')
    spec.renderer = version != null ? { name, version } : name
  }
  if (v.frames != null) spec.frames = v.frames
  if (v.name != null) spec.name = v.name
  spec.name ??= scene != null ? scene.replace(/^.*\//, '') : undefined
  if (v.priority != null) spec.priority = intFlag(v.priority, '--priority', 0, 1000)
  if (v.chunk != null) spec.chunk = intFlag(v.chunk, '--chunk', 1, 100_000)
  if (v.width != null) spec.width = intFlag(v.width, '--width', 1, 65536)
  if (v.height != null) spec.height = intFlag(v.height, '--height', 1, 65536)
  if (v.output != null) spec.outputPattern = v.output
  if (v.timeout != null) spec.frameTimeoutSec = intFlag(v.timeout, '--timeout', 1, 7 * 24 * 3600)
  if (v['max-attempts'] != null) spec.maxAttempts = intFlag(v['max-attempts'], '--max-attempts', 1, 100)
  if (v.require != null) spec.requirements = [...(spec.requirements ?? []), ...v.require]
  if (v.notify != null) spec.notify = [...(spec.notify ?? []), ...v.notify]
  if (v.arg != null) spec.command = v.arg
  if (v['allow-scripts'] === true) spec.allowScripts = true
  if (v.after != null) spec.after = [...(spec.after ?? []), ...v.after]
  if (v['after-frames'] != null) spec.afterFrames = v['after-frames']
  if (v.uses != null) spec.uses = [...(spec.uses ?? []), ...v.uses]
  if (v.host != null) spec.hosts = [...(spec.hosts ?? []), ...v.host]
  if (v['deny-host'] != null) spec.denyHosts = [...(spec.denyHosts ?? []), ...v['deny-host']]
  if (v['max-hosts'] != null) spec.maxHosts = intFlag(v['max-hosts'], '--max-hosts', 1, 100_000)
  if (v.memory != null) spec.memory = v.memory
  if (v.project != null) spec.project = v.project
  if (v.user != null) spec.user = v.user
  if (v.remote != null) spec.remote = v.remote
  return spec
}

export const submit: Command = {
  name: 'submit',
  summary: 'submit a job from this host; prints its id',
  usage: 'submit [SCENE [FILES…]] [--spec job.yaml] --renderer R[@VERSION] --frames F [--priority N] [--require KEY=PATTERN]… [--chunk N] [--name S] [--width W --height H] [--output PATTERN] [--timeout SEC] [--notify URI]… [--arg ARGV]… [--after JOB]… [--after-frames JOB] [--uses LIMIT]… [--host GLOB]… [--deny-host GLOB]… [--max-hosts K] [--memory SIZE] [--project P] [--remote SITE|auto|never] [--wait] [--json]',
  positionals: [0, 10_000],
  options: {
    spec: { type: 'string' },
    renderer: { type: 'string' },
    frames: { type: 'string' },
    priority: { type: 'string' },
    require: { type: 'string', multiple: true },
    chunk: { type: 'string' },
    name: { type: 'string' },
    width: { type: 'string' },
    height: { type: 'string' },
    output: { type: 'string' },
    timeout: { type: 'string' },
    'max-attempts': { type: 'string' },
    notify: { type: 'string', multiple: true },
    arg: { type: 'string', multiple: true },
    'allow-scripts': { type: 'boolean' },
    after: { type: 'string', multiple: true },
    'after-frames': { type: 'string' },
    uses: { type: 'string', multiple: true },
    host: { type: 'string', multiple: true },
    'deny-host': { type: 'string', multiple: true },
    'max-hosts': { type: 'string' },
    memory: { type: 'string' },
    project: { type: 'string' },
    user: { type: 'string' },
    remote: { type: 'string' },
    wait: { type: 'boolean' }
  },
  async run ({ values: v, positionals, data, json }, out) {
    if (v.spec == null && positionals.length === 0) throw new UsageError('submit: a SCENE file or --spec FILE is required')
    const spec = await specFrom(v, positionals)
    // checked here too, so a typo is a usage error naming the field before anything is sent
    try { validateJobSpec(spec, { user: 'x', group: 'x' }) } catch (err: any) { throw new UsageError(err.message) }
    const api = await connectApi(data)
    let res: any
    try {
      res = await api.call('POST', '/v1/jobs', { spec })
    } catch (err: any) {
      if (err.status === 400) throw new UsageError(err.message)
      throw err
    }
    if (json && v.wait !== true) { out.json(res); return }
    if (!json) out.print(res.id)
    if (v.wait === true) {
      const final = await waitForJob(api, res.id, json ? undefined : out)
      if (json) out.json({ ...res, state: final.state })
      return final.state === 'done' ? 0 : 1
    }
  }
}
