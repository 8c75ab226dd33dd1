import { ensureDataDir } from '../../storage/data-dir.js'
import { loadOrCreateIdentity } from '../../storage/identity.js'
import { readSiteSecret, writeSiteSecret } from '../../storage/site-secret.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { readFile } from 'node:fs/promises'
import { UsageError } from '../../node/errors.js'
import type { Command } from '../command.js'

export const init: Command = {
  name: 'init',
  summary: 'create the data directory and identity; --private makes a private site secret',
  usage: 'init [--data DIR] [--private [--secret HEX | --secret-file FILE]]',
  options: {
    private: { type: 'boolean' },
    secret: { type: 'string' },
    'secret-file': { type: 'string' }
  },
  async run ({ values: v, data, json }, out) {
    if ((v.secret != null || v['secret-file'] != null) && v.private !== true) throw new UsageError('init: --secret and --secret-file go with --private')
    const dir = await ensureDataDir(data)
    const key = await loadOrCreateIdentity(dir.identityKey)
    let secret: string | undefined
    if (v.private === true) {
      let given: string | undefined = v.secret
      if (v['secret-file'] != null) given = (await readFile(v['secret-file'], 'utf8').catch(() => { throw new UsageError(`--secret-file: cannot read ${v['secret-file']}`) })).trim()
      if (given != null && !/^[0-9a-f]{64}$/i.test(given)) throw new UsageError('--secret: expected 64 hex characters')
      const existing = await readSiteSecret(dir.siteSecret)
      secret = given == null && existing != null ? Buffer.from(existing).toString('hex') : await writeSiteSecret(dir.siteSecret, given)
    }
    const peerId = peerIdFromPrivateKey(key).toString()
    if (json) { out.json({ data: dir.root, peerId, private: secret != null, secretFile: secret != null ? dir.siteSecret : null }); return }
    out.print(`data directory ${dir.root}`)
    out.print(`peer id        ${peerId}`)
    if (secret != null) {
      out.print(`site secret    ${dir.siteSecret}`)
      out.print('Give the same secret to every host of this site: farmesh init --private --secret-file <copy of site.secret>')
    }
  }
}
