import type { FarmNode } from './farm-node.js'

/** Plug the roles a node runs into it: renderer, scheduler, origin. */
export function attachRoles (_node: FarmNode): void {}
