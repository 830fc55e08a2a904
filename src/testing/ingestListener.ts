/**
 * The HTTP/2 listener of the reference ingest server (h2c, or TLS): starts and stops listening
 * (the "refuse" fault closes it and reopens it on the same port) and tracks open connections.
 */
import * as http2 from "node:http2"
import type { AddressInfo } from "node:net"

export interface ListenerOptions {
  readonly host: string
  /** 0: an ephemeral port, kept across stop/start once chosen. */
  readonly port: number
  readonly tls: { readonly key: string | Buffer; readonly cert: string | Buffer } | undefined
  readonly handler: (request: http2.Http2ServerRequest, response: http2.Http2ServerResponse) => void
  /** Called when a connection closes. */
  readonly onConnectionClosed: () => void
}

export interface IngestListener {
  readonly start: () => Promise<void>
  /** Drops open connections and stops listening. */
  readonly stop: () => Promise<void>
  /** The port listened on (known once started). */
  readonly port: () => number
  readonly connections: () => number
}

export const makeListener = (options: ListenerOptions): IngestListener => {
  // HTTP/2 flow control: with the default 64 KiB windows, every request over 64 KiB waits a round
  // trip for a WINDOW_UPDATE. Real gRPC servers grow their windows (BDP probing); we start large.
  const settings = { initialWindowSize: 4 * 1024 * 1024 }
  const server: http2.Http2Server | http2.Http2SecureServer = options.tls === undefined
    ? http2.createServer({ settings }, options.handler)
    : http2.createSecureServer({ settings, key: options.tls.key, cert: options.tls.cert }, options.handler)
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on("session", (session) => {
    session.setLocalWindowSize(16 * 1024 * 1024)
    sessions.add(session)
    session.on("close", () => {
      sessions.delete(session)
      options.onConnectionClosed()
    })
    session.on("error", () => {})
  })

  const state = { port: options.port, listening: false }
  return {
    start: () =>
      new Promise<void>((resolve, reject) => {
        if (state.listening) return resolve()
        const onError = (error: Error) => reject(error)
        server.once("error", onError)
        server.listen(state.port, options.host, () => {
          server.off("error", onError)
          state.listening = true
          state.port = (server.address() as AddressInfo).port
          resolve()
        })
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy()
        if (!state.listening) return resolve()
        state.listening = false
        server.close(() => resolve())
      }),
    port: () => state.port,
    connections: () => sessions.size
  }
}
