import type { Fingerprint } from '../../node/fingerprint-types.js'
import type { JobRecord, TaskRecord } from '../../node/jobs/job-model.js'
import { validateJobSpec, jobRequirements } from '../../node/jobs/job-spec.js'

/** Synthetic hosts and jobs for the pure scheduler tests. */
export function fingerprint (over: Partial<Fingerprint> & { hostname: string }): Fingerprint {
  return {
    machine: { family: 'x86_64', type: 'server', vendor: 'x', model: 'y' },
    os: { family: 'Linux', type: 'debian', version: '12', release: '6.1' },
    cpu: { count: 8, family: 'x', model: 'x', speedMHz: 3000 },
    ram: { total: 32 * 2 ** 30, free: 16 * 2 ** 30 },
    swap: { total: 0, free: 0 },
    gpus: [],
    renderers: [{ name: 'builtin', version: '0.1.0' }, { name: 'povray', version: '3.7.0.10' }],
    licenses: [],
    slots: { total: 4, busy: 0 },
    ...over
  }
}

let seq = 0
export function job (id: string, spec: Record<string, unknown> = {}, tasks = 4): { job: JobRecord, tasks: TaskRecord[] } {
  const s = validateJobSpec({ name: id, frames: `1-${tasks}`, renderer: 'builtin', scene: '/s.json', user: 'u', group: 'g', ...spec })
  const j: JobRecord = {
    id, seq: ++seq, name: id, spec: s, requirements: jobRequirements(s), inputs: [], scene: 's.json', origin: 'o',
    state: 'queued', priority: s.priority, submittedAt: 0, hostFailures: {}, excludedHosts: [], frameCount: tasks, taskCount: tasks
  }
  const ts: TaskRecord[] = Array.from({ length: tasks }, (_, i) => ({ jobId: id, index: i, frames: [i + 1], state: 'queued', attempts: 0, triedHosts: [], progress: 0, errors: [] }))
  return { job: j, tasks: ts }
}
