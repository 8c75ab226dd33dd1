/**
 * The host fingerprint (the patent's FIGURE 9): what a node advertises about
 * its host so that schedulers can match job requirements against it.
 * Every field is plain JSON so it can travel in adverts unchanged.
 */
export interface RendererInfo {
  /** `builtin`, `blender`, `povray`, `command` */
  name: string
  /** the version the renderer itself printed, e.g. `3.4.1`, `3.7.0.10` */
  version: string
}

export interface GpuInfo {
  vendor: string
  model: string
}

export interface Fingerprint {
  hostname: string
  machine: { family: string, type: string, vendor: string, model: string }
  os: { family: string, type: string, version: string, release: string }
  cpu: { count: number, family: string, model: string, speedMHz: number }
  /** bytes */
  ram: { total: number, free: number }
  /** bytes */
  swap: { total: number, free: number }
  gpus: GpuInfo[]
  renderers: RendererInfo[]
  /** names from the license file in the data directory, e.g. `povray-pro` */
  licenses: string[]
  slots: { total: number, busy: number }
}
