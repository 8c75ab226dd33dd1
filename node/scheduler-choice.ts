import type { ResourceTable } from './resource-table.js'

/**
 * Which node of the site schedules. Until elections land (issue 4) this is a
 * deterministic choice every node computes alike from its resource table:
 * the smallest peer id among live hosts willing to schedule. Kept behind this
 * one function so an election can replace it.
 */
export function chooseScheduler (table: ResourceTable): string | null {
  let best: string | null = null
  for (const { advert } of table.entries()) {
    if (!advert.roles.schedule || advert.leaving) continue
    if (best == null || advert.peerId < best) best = advert.peerId
  }
  return best
}
