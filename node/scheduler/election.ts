import { EventEmitter } from 'node:events'
import type { ResourceTable } from '../resource-table.js'

/**
 * Which node of the site schedules, and in which term.
 *
 * Algorithm: leader election over the site's membership view with Raft-style
 * terms and fencing tokens (a "bully" election where the ballot is the
 * resource table every node already keeps). Each advert carries the highest
 * term its sender has seen and whether it claims the scheduler role.
 *
 * - A node follows the live claimant with the highest term (ties: lowest
 *   peer id). A claimant that sees a higher claim steps down at once.
 * - When no live claimant is left (it stopped, died, or is on the other side
 *   of a partition), the best eligible host claims term = highest seen + 1:
 *   a host allowed to schedule, preferring dedicated (non-rendering) hosts,
 *   then the longest uptime, then the lowest peer id. Hosts start claiming
 *   only CLAIM_GRACE_MS after they start, so a newcomer learns of the
 *   current scheduler before it could contest it; a live claimant is never
 *   displaced by a better candidate that joins later (stickiness).
 *
 * Invariants kept:
 * 1. Terms only grow: the term is persisted before it is advertised.
 * 2. Within one connected view there is one scheduler: every node applies
 *    the same rule to the same claims.
 * 3. Fencing: renderers and replicas refuse dispatches and writes carrying a
 *    term lower than the highest they have seen, so a deposed or partitioned
 *    scheduler cannot act on hosts that have heard of its successor.
 * During a partition each side elects its own scheduler and keeps
 * rendering (availability over a single writer); on healing the higher term
 * wins and the job states merge (see replica-merge.ts).
 */
export const CLAIM_GRACE_MS = 3_000

export interface ElectionInit {
  self: string
  table: ResourceTable
  /** the highest term this node ever saw, from its database */
  term: number
  startedAt: number
  canSchedule: boolean
  persistTerm: (term: number) => Promise<void>
  /** tell the site our claim and term (via our advert) */
  advertise: (claim: boolean, term: number) => void
  now?: () => number
}

export class Election extends EventEmitter<{ change: [leader: string | null, term: number] }> {
  private term: number
  private claiming = false
  private claimTerm = 0
  private current: string | null = null
  private timer?: NodeJS.Timeout
  private evaluating = false
  private stopped = false
  private again = false

  constructor (private readonly init: ElectionInit) {
    super()
    this.term = init.term
  }

  private readonly onTable = (): void => { void this.evaluate() }

  start (): void {
    this.init.table.on('change', this.onTable)
    // the grace period ends without any table change on a lone host
    this.timer = setTimeout(() => { void this.evaluate() }, CLAIM_GRACE_MS + 50)
    this.timer.unref()
    void this.evaluate()
  }

  stop (): void {
    this.stopped = true
    this.init.table.off('change', this.onTable)
    if (this.timer != null) clearTimeout(this.timer)
  }

  leader (): string | null { return this.current }
  currentTerm (): number { return this.term }
  isLeader (): boolean { return this.current === this.init.self && this.claiming }

  /** A message carried `term`: remember it, so older terms are refused from now on. */
  observe (term: number): void {
    if (term > this.term) {
      this.term = term
      void this.init.persistTerm(term)
      void this.evaluate()
    }
  }

  /** Is a message of `term` from a current scheduler? False means fenced. */
  accepts (term: number): boolean { return term >= this.term }

  private now (): number { return (this.init.now ?? Date.now)() }

  async evaluate (): Promise<void> {
    if (this.evaluating) { this.again = true; return }
    this.evaluating = true
    try {
      do {
        this.again = false
        await this.step()
      } while (this.again)
    } finally {
      this.evaluating = false
    }
  }

  private async step (): Promise<void> {
    if (this.stopped) return
    const entries = this.init.table.entries().filter(e => !e.advert.leaving)
    for (const e of entries) if (e.advert.term > this.term) { this.term = e.advert.term; await this.init.persistTerm(this.term) }
    // a claim is for the term it was made in: a newer term anywhere deposes it (as in Raft)
    if (this.claiming && this.term > this.claimTerm) {
      this.claiming = false
      this.init.advertise(false, this.term)
    }
    const claims = entries.filter(e => e.advert.claim === true && e.advert.peerId !== this.init.self)
      .map(e => ({ id: e.advert.peerId, term: e.advert.term }))
    if (this.claiming) claims.push({ id: this.init.self, term: this.claimTerm })
    claims.sort((a, b) => b.term - a.term || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    let leader = claims[0]?.id ?? null

    if (this.claiming && leader !== this.init.self) {
      this.claiming = false
      this.init.advertise(false, this.term)
    }
    if (leader == null && this.init.canSchedule && this.now() - this.init.startedAt >= CLAIM_GRACE_MS && this.bestCandidate() === this.init.self) {
      this.term += 1
      await this.init.persistTerm(this.term)
      this.claimTerm = this.term
      this.claiming = true
      leader = this.init.self
      this.init.advertise(true, this.term)
    }
    if (leader !== this.current) {
      this.current = leader
      this.emit('change', leader, this.term)
    }
  }

  private bestCandidate (): string | undefined {
    const eligible = this.init.table.entries().filter(e => e.advert.roles.schedule && !e.advert.leaving)
    eligible.sort((a, b) =>
      Number(a.advert.roles.render) - Number(b.advert.roles.render) ||
      a.advert.startedAt - b.advert.startedAt ||
      (a.advert.peerId < b.advert.peerId ? -1 : 1))
    return eligible[0]?.advert.peerId
  }
}
