import type { Fingerprint } from '../fingerprint-types.js'
import type { JobRecord, TaskRecord } from '../jobs/job-model.js'
import { globMatches, matchesRequirements } from '../jobs/requirements.js'

/**
 * The pure core of dispatch (the patent's FIGURE 5B, steps 124–130): given
 * the queue in priority order and the hosts with free slots, decide which
 * task goes to which host.
 *
 * - The most urgent priority is served first. Within one priority, slots go
 *   to the user (or project) furthest below its fair share (running frames
 *   divided by its weight), FIFO among equals — so one person's 10,000-frame
 *   job does not block everyone's 10-frame tests.
 * - A job's frames go only to hosts matching its requirements, allowed by its
 *   host allow/deny lists, with the memory it declares free, and never more
 *   hosts at once than its machine limit; each running frame holds one of
 *   every site-wide limit (floating license) the job uses.
 * - Among the matching hosts the fastest come first; a retried task goes to a
 *   host it has not failed on when one is free.
 *
 * Cost: one match per (job, host), then O(jobs in the priority) per
 * assignment, so a plan over 10,000 queued frames and 1,000 hosts stays far
 * below the time between two frame completions.
 */
export interface PlannerHost {
  id: string
  fingerprint: Fingerprint
  free: number
}

export interface PlannerJob {
  job: JobRecord
  /** the job's queued tasks that may start (dependencies met), in frame order */
  queued: TaskRecord[]
  /** hosts running its frames now: the machine limit counts them */
  hostsInUse?: Set<string>
}

export interface PlanPolicy {
  /** free units of each site-wide limit; a limit not listed is unlimited */
  limitsFree?: Map<string, number>
  /** running frames per fair-share key (project, else user) */
  usage?: Map<string, number>
  /** a fair-share key's weight (default 1) */
  weight?: (key: string) => number
  /** memory a task needs, when it was raised after a frame ran out of memory */
  taskMemory?: (task: TaskRecord) => number | undefined
}

export interface Assignment { task: TaskRecord, host: string }

export function shareKey (job: JobRecord): string { return job.spec.project ?? job.spec.user }

/** Can `host` render `job` at all (ignoring free slots and limits)? */
export function hostAllowed (job: JobRecord, h: PlannerHost): boolean {
  if (job.excludedHosts.includes(h.id)) return false
  const names = [h.id, h.fingerprint.hostname]
  const spec = job.spec
  if (spec.hosts != null && spec.hosts.length > 0 && !spec.hosts.some(g => names.some(n => globMatches(n, g)))) return false
  if (spec.denyHosts?.some(g => names.some(n => globMatches(n, g))) === true) return false
  if (spec.memory != null && h.fingerprint.ram.free < spec.memory) return false
  return matchesRequirements(h.fingerprint, job.requirements)
}

interface JobState {
  pj: PlannerJob
  candidates: PlannerHost[]
  next: number
  inUse: Set<string>
  order: number
}

export function planDispatch (jobs: PlannerJob[], hosts: PlannerHost[], policy: PlanPolicy = {}): Assignment[] {
  const free = new Map<string, number>()
  for (const h of hosts) if (h.free > 0) free.set(h.id, h.free)
  let slotsLeft = [...free.values()].reduce((a, b) => a + b, 0)
  if (slotsLeft === 0) return []
  const bySpeed = hosts.filter(h => h.free > 0).sort((a, b) => b.fingerprint.cpu.speedMHz - a.fingerprint.cpu.speedMHz || b.free - a.free || a.id.localeCompare(b.id))
  const limits = new Map(policy.limitsFree ?? [])
  const usage = new Map(policy.usage ?? [])
  const weight = policy.weight ?? (() => 1)
  const out: Assignment[] = []

  // bands of equal priority, in queue order
  const bands: JobState[][] = []
  jobs.forEach((pj, order) => {
    if (pj.queued.length === 0) return
    const last = bands[bands.length - 1]
    const st: JobState = { pj, candidates: [], next: 0, inUse: new Set(pj.hostsInUse ?? []), order }
    if (last != null && last[0].pj.job.priority === pj.job.priority) last.push(st)
    else bands.push([st])
  })
  const matchCache = new Map<string, PlannerHost[]>()
  for (const band of bands) {
    for (const st of band) {
      const j = st.pj.job
      const key = JSON.stringify([j.requirements, j.excludedHosts, j.spec.hosts, j.spec.denyHosts, j.spec.memory])
      let c = matchCache.get(key)
      if (c == null) { c = bySpeed.filter(h => hostAllowed(j, h)); matchCache.set(key, c) }
      st.candidates = c
    }
  }

  for (const band of bands) {
    const open = new Set(band)
    while (open.size > 0 && slotsLeft > 0) {
      // the job whose user/project is furthest below its share; FIFO among equals
      let pick: JobState | undefined
      let best = Infinity
      for (const st of open) {
        const k = shareKey(st.pj.job)
        const score = (usage.get(k) ?? 0) / Math.max(weight(k), 1e-9)
        if (score < best || (score === best && pick != null && st.order < pick.order)) { best = score; pick = st }
      }
      if (pick == null) break
      const host = assignOne(pick, free, limits, policy)
      if (host == null) { open.delete(pick); continue }
      const task = pick.pj.queued.shift() as TaskRecord
      out.push({ task, host })
      slotsLeft--
      const k = shareKey(pick.pj.job)
      usage.set(k, (usage.get(k) ?? 0) + 1)
      if (pick.pj.queued.length === 0) open.delete(pick)
    }
    if (slotsLeft === 0) break
  }
  return out
}

/** Find a host for the job's next task and take its slot and limits; undefined when none fits. */
function assignOne (st: JobState, free: Map<string, number>, limits: Map<string, number>, policy: PlanPolicy): string | undefined {
  const job = st.pj.job
  const task = st.pj.queued[0]
  const uses = job.spec.uses ?? []
  if (uses.some(u => limits.has(u) && (limits.get(u) ?? 0) <= 0)) return undefined
  const need = policy.taskMemory?.(task)
  const atMachineLimit = job.spec.maxHosts != null && st.inUse.size >= job.spec.maxHosts
  const fits = (h: PlannerHost): boolean => (free.get(h.id) ?? 0) > 0 && (!atMachineLimit || st.inUse.has(h.id)) && (need == null || h.fingerprint.ram.free >= need)
  // hosts whose slots are used up stay used up within a plan: skip them for good
  while (st.next < st.candidates.length && (free.get(st.candidates[st.next].id) ?? 0) <= 0) st.next++
  let pick: PlannerHost | undefined
  for (let i = st.next; i < st.candidates.length; i++) {
    const h = st.candidates[i]
    if (!fits(h)) continue
    if (pick == null) pick = h
    if (!task.triedHosts.includes(h.id)) { pick = h; break }
    if (i - st.next > 64) break // a retried task: look a little further for a fresh host, not forever
  }
  if (pick == null) return undefined
  free.set(pick.id, (free.get(pick.id) ?? 0) - 1)
  for (const u of uses) if (limits.has(u)) limits.set(u, (limits.get(u) ?? 0) - 1)
  st.inUse.add(pick.id)
  return pick.id
}
