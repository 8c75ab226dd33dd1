import './polyfill.js'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'

/**
 * The libp2p stack every farmesh node runs: TCP, Noise (peer ids are
 * authenticated), Yamux, identify. Non-members are kept out by the site
 * membership handshake; peers that recently failed it are refused here,
 * before their connection is even upgraded.
 */
export interface HostInit {
  privateKey: PrivateKey
  listen: string[]
  isRefused: (peer: PeerId) => boolean
}

export async function createHost (init: HostInit): Promise<Libp2p<{ identify: ReturnType<ReturnType<typeof identify>> }>> {
  const deny = (peer: PeerId): boolean => init.isRefused(peer)
  return await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // 1 MiB windows keep a paused reader within its 4 MiB read buffer (libp2p-v3 notes, pitfall 3)
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 1 << 20 } } as any)],
    connectionGater: {
      denyDialPeer: deny,
      denyInboundEncryptedConnection: deny,
      denyOutboundEncryptedConnection: deny,
      // the farm dials private LAN addresses; the default gater refuses none of them anyway
      denyDialMultiaddr: () => false
    },
    services: { identify: identify() }
  })
}
