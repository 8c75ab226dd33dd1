/**
 * Typed errors, matched by `err.name` as in js-libp2p. `UsageError` means the
 * person typed something wrong (exit code 2); everything else is a runtime
 * failure (exit code 1).
 */
export class UsageError extends Error {
  constructor (message: string) { super(message); this.name = 'UsageError' }
}

export class ConfigError extends Error {
  constructor (message: string) { super(message); this.name = 'ConfigError' }
}

export class IdentityError extends Error {
  constructor (message: string) { super(message); this.name = 'IdentityError' }
}

export class DataDirError extends Error {
  constructor (message: string) { super(message); this.name = 'DataDirError' }
}

export class NodeRunningError extends Error {
  constructor (message: string) { super(message); this.name = 'NodeRunningError' }
}

export class NotMemberError extends Error {
  constructor (message = 'peer is not a verified member of this site') { super(message); this.name = 'NotMemberError' }
}

export class ProtocolError extends Error {
  constructor (message: string) { super(message); this.name = 'ProtocolError' }
}

export class ApiError extends Error {
  readonly status: number
  constructor (message: string, status = 400) { super(message); this.name = 'ApiError'; this.status = status }
}
