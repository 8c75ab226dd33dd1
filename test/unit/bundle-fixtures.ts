import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { newBundleNonce, type BundleInputFile, type packBundle, type UnpackOptions } from '../../storage/bundle.js'
import { generateSiteKeys } from '../../storage/site-keys.js'

/** Two sites and the helpers the bundle tests share: `origin` packs, `remote` unpacks. */
export const origin = generateSiteKeys('origin studio')
export const remote = generateSiteKeys('remote studio')

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Writes `data` under `dir/src` and describes it as a job input. */
export function inputFile (dir: string, path: string, data: Buffer, original?: string): BundleInputFile {
  const source = join(dir, 'src', path.replace(/\//g, '__'))
  mkdirSync(join(dir, 'src'), { recursive: true })
  writeFileSync(source, data)
  return { path, hash: sha256(data), size: data.byteLength, source, ...(original !== undefined ? { original } : {}) }
}

export function unpackOptions (tempDir: string, over: Partial<UnpackOptions> = {}): UnpackOptions {
  return {
    recipientEncPriv: remote.encPrivate,
    recipientSiteId: remote.siteId,
    trustedSigners: id => id === origin.siteId ? origin.signPublic : undefined,
    seenNonce: () => false,
    tempDir,
    ...over
  }
}

export function baseOptions (files: BundleInputFile[], over: Partial<Parameters<typeof packBundle>[0]> = {}): Parameters<typeof packBundle>[0] {
  return {
    job: { name: 'shot 12', renderer: 'povray', frames: '1-10', scene: 'scene.pov' },
    files,
    signer: origin.signPrivate,
    recipientEncPub: remote.encPublic,
    recipientSiteId: remote.siteId,
    jobId: 'j1',
    originSiteId: origin.siteId,
    createdAt: Date.now(),
    nonce: newBundleNonce(),
    ...over
  }
}
