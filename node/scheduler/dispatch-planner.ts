import type { Fingerprint } from '../fingerprint-types.js'
import type { JobRecord, TaskRecord } from '../jobs/job-model.js'
import { matchesRequirements } from '../jobs/requirements.js'

/**
 * The pure core of dispatch (the patent's FIGURE 5B, steps 124–130): given
 * the queue in priority order and the hosts with free slots, decide which
 * task goes to which host. The most urgent job is served first; among the
 * hosts matching a job's requirements the fastest come first; a retried task
 * goes to a host it has not failed on when one is free.
 *
 * Cost: one requirement match per (job, host), then O(1) amortized per
 * assignment, so a plan over 10,000 queued frames and 1,000 hosts stays
 * well under the time between two frame completions.
 */
export interface PlannerHost {
  id: string
  fingerprint: Fingerprint
  free: number
}

export interface PlannerJob {
  job: JobRecord
  /** the job's queued tasks, in frame order */
  queued: TaskRecord[]
}

export interface Assignment { task: TaskRecord, host: string }

function speed (h: PlannerHost): number { return h.fingerprint.cpu.speedMHz }

export function planDispatch (jobs: PlannerJob[], hosts: PlannerHost[]): Assignment[] {
  const free = new Map<string, number>()
  for (const h of hosts) if (h.free > 0) free.set(h.id, h.free)
  if (free.size === 0) return []
  const bySpeed = hosts.filter(h => h.free > 0).sort((a, b) => speed(b) - speed(a) || b.free - a.free || a.id.localeCompare(b.id))
  const matchCache = new Map<string, PlannerHost[]>()
  const out: Assignment[] = []

  for (const { job, queued } of jobs) {
    if (queued.length === 0) continue
    const key = JSON.stringify(job.requirements)
    let matching = matchCache.get(key)
    if (matching == null) {
      matching = bySpeed.filter(h => matchesRequirements(h.fingerprint, job.requirements))
      matchCache.set(key, matching)
    }
    const excluded = new Set(job.excludedHosts)
    const candidates = matching.filter(h => !excluded.has(h.id))
    let cursor = 0
    for (const task of queued) {
      // skip hosts whose slots are used up, for good: they do not free up within a plan
      while (cursor < candidates.length && (free.get(candidates[cursor].id) ?? 0) <= 0) cursor++
      if (cursor >= candidates.length) break
      let pick = candidates[cursor]
      if (task.triedHosts.includes(pick.id)) {
        const other = candidates.slice(cursor).find(h => (free.get(h.id) ?? 0) > 0 && !task.triedHosts.includes(h.id))
        if (other != null) pick = other
      }
      free.set(pick.id, (free.get(pick.id) ?? 0) - 1)
      out.push({ task, host: pick.id })
    }
    if (free.size > 0 && [...free.values()].every(n => n <= 0)) break
  }
  return out
}
