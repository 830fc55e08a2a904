/**
 * A TCP proxy between a client under test and a real server (the shared PostgreSQL), with the
 * network faults the fault suite injects. The server itself is never touched: cutting the proxy
 * is how a test takes the database away.
 *
 * - `cut()`: every connection closed (FIN), the listener closed, so new ones are refused;
 * - `reset()`: every connection reset (RST); new ones are still accepted;
 * - `blackhole()`: connections, open and new, are kept but nothing is forwarded either way (the
 *   bytes are swallowed, as a partition that drops packets). Such a connection has lost bytes, so
 *   `restore()` resets it, as a stateful firewall does with a connection it forgot;
 * - `slow(ms)`: every chunk is forwarded `ms` later (in order);
 * - `restore()`: back to forwarding at once, listening again on the same port.
 */
import { Effect, Redacted, type Scope } from "effect"
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from "node:net"

export type ProxyMode = "forward" | "cut" | "blackhole"

export interface TcpProxy {
  readonly port: number
  /** `url` with host and port replaced by the proxy's. */
  readonly urlFor: (url: string) => Redacted.Redacted<string>
  readonly cut: () => Promise<void>
  readonly reset: () => void
  readonly blackhole: () => void
  readonly slow: (ms: number) => void
  readonly restore: () => Promise<void>
  /** Connections accepted so far, and open now. */
  readonly stats: () => { readonly accepted: number; readonly open: number }
}

interface Pair {
  readonly client: Socket
  readonly upstream: Socket
  /** Bytes were swallowed on this pair: it cannot carry the protocol any more. */
  swallowed: boolean
}

/** Forwards `from` to `to`, delaying each chunk by `delayMs()` (order kept) or dropping it while `drop()`. */
const forward = (from: Socket, to: Socket, delayMs: () => number, drop: () => boolean, onDrop: () => void) => {
  const queue: Array<{ readonly due: number; readonly chunk: Buffer }> = []
  let timer: ReturnType<typeof setTimeout> | undefined
  const drain = () => {
    timer = undefined
    const now = Date.now()
    while (queue.length > 0 && queue[0]!.due <= now) {
      const { chunk } = queue.shift()!
      if (!to.destroyed) to.write(chunk)
    }
    if (queue.length > 0) timer = setTimeout(drain, queue[0]!.due - now)
  }
  from.on("data", (chunk: Buffer) => {
    if (drop()) return onDrop()
    const delay = delayMs()
    if (delay === 0 && queue.length === 0) {
      to.write(chunk)
      return
    }
    queue.push({ due: Math.max(Date.now() + delay, queue.at(-1)?.due ?? 0), chunk })
    if (timer === undefined) timer = setTimeout(drain, Math.max(0, queue[0]!.due - Date.now()))
  })
  from.on("close", () => {
    if (timer !== undefined) clearTimeout(timer)
  })
}

const listen = (server: Server, port: number) =>
  new Promise<number>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject)
      resolve((server.address() as AddressInfo).port)
    })
  })

export const makeTcpProxy = (target: { readonly host: string; readonly port: number }): Effect.Effect<TcpProxy, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      let mode: ProxyMode = "forward"
      let delay = 0
      let accepted = 0
      const pairs = new Set<Pair>()
      const server = createServer((client) => {
        accepted++
        const upstream = createConnection({ host: target.host, port: target.port })
        const pair: Pair = { client, upstream, swallowed: mode === "blackhole" }
        pairs.add(pair)
        for (const socket of [client, upstream]) {
          socket.on("error", () => {})
          socket.on("close", () => {
            pairs.delete(pair)
            client.destroy()
            upstream.destroy()
          })
        }
        const drop = () => mode === "blackhole"
        const swallowed = () => {
          pair.swallowed = true
        }
        forward(client, upstream, () => delay, drop, swallowed)
        forward(upstream, client, () => delay, drop, swallowed)
      })
      const port = await listen(server, 0)
      const destroyAll = (how: "end" | "reset", which: (pair: Pair) => boolean = () => true) => {
        for (const pair of [...pairs]) {
          if (!which(pair)) continue
          for (const socket of [pair.client, pair.upstream]) {
            if (how === "reset") socket.resetAndDestroy()
            else socket.destroy()
          }
        }
      }
      const closeListener = () => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))
      const proxy: TcpProxy & { readonly close: () => Promise<void> } = {
        port,
        urlFor: (url) => {
          const parsed = new URL(url)
          parsed.hostname = "127.0.0.1"
          parsed.port = String(port)
          return Redacted.make(parsed.toString())
        },
        cut: async () => {
          mode = "cut"
          const closed = closeListener()
          destroyAll("end")
          await closed
        },
        reset: () => destroyAll("reset"),
        blackhole: () => {
          mode = "blackhole"
          for (const pair of pairs) pair.swallowed = true
        },
        slow: (ms) => {
          delay = ms
        },
        restore: async () => {
          if (mode === "blackhole") destroyAll("reset", (pair) => pair.swallowed)
          mode = "forward"
          delay = 0
          if (!server.listening) await listen(server, port)
        },
        stats: () => ({ accepted, open: pairs.size }),
        close: async () => {
          const closed = closeListener()
          destroyAll("end")
          await closed
        }
      }
      return proxy
    }),
    (proxy) => Effect.promise(() => proxy.close())
  )

/** A proxy in front of the PostgreSQL of `databaseUrl`. */
export const pgProxy = (databaseUrl: string) => {
  const url = new URL(databaseUrl)
  return makeTcpProxy({ host: url.hostname, port: Number(url.port || 5432) })
}
