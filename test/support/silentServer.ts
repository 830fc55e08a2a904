/** A TCP server that accepts connections and never answers: for connect and handshake timeouts. */
import { createServer, type AddressInfo, type Server, type Socket } from "node:net"
import { Effect } from "effect"

/** Listens on 127.0.0.1 until the scope closes; `sockets` are the connections it accepted. */
export const silentServer = Effect.gen(function*() {
  const sockets: Array<Socket> = []
  const server = yield* Effect.acquireRelease(
    Effect.callback<Server>((resume) => {
      const server = createServer((socket) => void sockets.push(socket))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.sync(() => {
        sockets.forEach((socket) => socket.destroy())
        server.close()
      })
  )
  return { port: (server.address() as AddressInfo).port, sockets }
})
