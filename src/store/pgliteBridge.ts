/**
 * A PostgreSQL wire-protocol connection to a PGlite instance in this process, as a `node:stream`
 * Duplex: what `@effect/sql-pg` takes as its `stream` option. Bytes the driver writes are cut into
 * whole frontend messages and handed to PGlite (`execProtocolRawStream`), one batch at a time under
 * PGlite's own query mutex; PGlite's answer is pushed back as the server's bytes.
 *
 * PGlite is ONE backend session, so the bridge admits one open connection at a time (a second
 * startup is refused with SQLSTATE 53300) and resets the session (ROLLBACK, DISCARD ALL) when a new
 * connection starts, so nothing a previous connection left behind (an open transaction, prepared
 * statements) leaks into it. A CancelRequest is closed unanswered: PGlite runs each message to
 * completion before anything else can happen, so there is never a running query to cancel.
 * TLS and GSS encryption requests are declined ('N'). Terminate ends the connection without
 * reaching PGlite (in single-user mode it would shut the backend down).
 */
import type { PGlite } from "@electric-sql/pglite"
import { Duplex } from "node:stream"

const protocolVersion3 = 196608
const sslRequestCode = 80877103
const gssEncRequestCode = 80877104
const cancelRequestCode = 80877102
/** Frontend message types the bridge handles itself. */
const terminate = 0x58 // 'X'

/** Longest frontend message accepted (the driver's own default for backend messages is 16 MiB). */
const maxMessageBytes = 1 << 30

const encoder = new TextEncoder()

const typed = (type: string, body: Uint8Array): Uint8Array => {
  const out = new Uint8Array(5 + body.length)
  out[0] = type.charCodeAt(0)
  new DataView(out.buffer).setInt32(1, 4 + body.length)
  out.set(body, 5)
  return out
}

const cString = (text: string) => {
  const bytes = encoder.encode(text)
  const out = new Uint8Array(bytes.length + 1)
  out.set(bytes)
  return out
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

const sync = typed("S", new Uint8Array(0))
const simpleQuery = (sql: string) => typed("Q", cString(sql))
/**
 * Sync first: if the previous connection died after a failed extended-query message, the session
 * discards everything up to the next Sync. DISCARD ALL cannot run in a transaction block, so
 * ROLLBACK goes first, in a message of its own.
 */
const sessionReset = concat([sync, simpleQuery("ROLLBACK"), simpleQuery("DISCARD ALL")])

const errorResponse = (code: string, message: string) =>
  typed(
    "E",
    concat([
      cString("SFATAL"),
      cString("VFATAL"),
      cString(`C${code}`),
      cString(`M${message}`),
      new Uint8Array(1)
    ])
  )

/** One PGlite, any number of connections over time, at most one open at a time. */
export interface PgliteBridge {
  /** A new connection (for sql-pg's `stream` option). */
  readonly connect: () => Duplex
}

/** Resolves once the event loop has had a turn: pending I/O callbacks and due timers run first. */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve))

export const makeBridge = (pglite: PGlite): PgliteBridge => {
  /** The connection that owns the session, if any. */
  let owner: object | undefined
  let connections = 0

  /**
   * Runs frames on PGlite one batch at a time; PGlite's query mutex also orders them against close().
   *
   * PGlite runs on this thread: while it executes, nothing else in the process runs. Without the
   * `setImmediate` the next batch would start from a promise continuation (a microtask), and a
   * driver that always has another statement queued (a burst of commits) would keep PGlite busy
   * without ever returning to the event loop: no socket is read or written, so the publisher's
   * requests to the ingest time out and the rows are re-sent (measured: 50 000 events committed,
   * nothing delivered for two minutes). Yielding to the event loop before each batch lets I/O
   * (and timers) in between.
   */
  const exec = (frame: Uint8Array) =>
    yieldToEventLoop().then(() => pglite.runExclusive(() => execRaw(frame)))

  /**
   * The answer's bytes as PGlite writes them. Not `execProtocolRaw`: it also parses every backend
   * message into JavaScript objects (each row's fields decoded to strings) for its own query API,
   * which the driver on the other side does again; that parse took 6 µs per emitted event.
   */
  const execRaw = async (frame: Uint8Array): Promise<Uint8Array> => {
    const chunks: Array<Uint8Array> = []
    // A chunk is a view of PGlite's memory, valid only during the call: copied.
    await pglite.execProtocolRawStream(frame, { onRawData: (chunk) => void chunks.push(chunk.slice()) })
    return chunks.length === 1 ? chunks[0]! : concat(chunks)
  }

  const connect = (): Duplex => {
    const self = {}
    let buffer: Uint8Array = new Uint8Array(0)
    let started = false
    let ended = false
    /** Whole messages run in arrival order: each write waits for the previous one. */
    let tail: Promise<void> = Promise.resolve()

    const release = () => {
      if (owner === self) owner = undefined
    }

    const reply = (bytes: Uint8Array) => {
      // Bytes of our own (see execRaw): wrapped, not copied again.
      if (bytes.length > 0 && !ended) socket.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    }

    /** Ends the server side, like a server closing the socket. */
    const close = () => {
      if (ended) return
      ended = true
      release()
      socket.push(null)
    }

    const take = (length: number): Uint8Array => {
      const message = buffer.subarray(0, length)
      buffer = buffer.subarray(length)
      return message
    }

    const startup = async (message: Uint8Array, code: number) => {
      switch (code) {
        case sslRequestCode:
        case gssEncRequestCode:
          reply(encoder.encode("N"))
          return
        case cancelRequestCode:
          close()
          return
        case protocolVersion3: {
          if (owner !== undefined) {
            reply(errorResponse("53300", "PGlite bridge: the embedded database takes one connection at a time"))
            close()
            return
          }
          owner = self
          started = true
          if (connections++ > 0) await exec(sessionReset)
          // PGlite answers the startup packet itself: AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery.
          reply(await exec(message))
          return
        }
        default:
          reply(errorResponse("08P01", `PGlite bridge: unsupported startup code ${code}`))
          close()
      }
    }

    /** Forwards every whole message in the buffer; keeps a partial one for the next write. */
    const drain = async (): Promise<void> => {
      while (!ended) {
        const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
        if (!started) {
          if (buffer.length < 8) return
          const length = view.getInt32(0)
          if (length < 8 || length > 10_000) throw new Error(`PGlite bridge: invalid startup message length ${length}`)
          if (buffer.length < length) return
          const code = view.getInt32(4)
          await startup(take(length), code)
          continue
        }
        // Everything whole goes in one batch: PGlite runs batched messages in order, answering each.
        let end = 0
        let sawTerminate = false
        while (end + 5 <= buffer.length) {
          const length = view.getInt32(end + 1)
          if (length < 4 || length > maxMessageBytes) {
            throw new Error(`PGlite bridge: invalid length ${length} of a '${String.fromCharCode(buffer[end]!)}' message`)
          }
          if (end + 1 + length > buffer.length) break
          if (buffer[end] === terminate) {
            sawTerminate = true
            break
          }
          end += 1 + length
        }
        if (end > 0) reply(await exec(take(end)))
        if (sawTerminate) return close()
        if (end === 0) return
      }
    }

    const socket: Duplex = new Duplex({
      allowHalfOpen: false,
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        if (ended) return callback()
        buffer = buffer.length === 0 ? new Uint8Array(chunk) : concat([buffer, chunk])
        tail = tail.then(drain).then(
          () => callback(),
          (error: unknown) => {
            callback()
            socket.destroy(error instanceof Error ? error : new Error(String(error)))
          }
        )
      },
      final(callback) {
        tail.then(() => {
          close()
          callback()
        }, () => callback())
      },
      destroy(error, callback) {
        ended = true
        release()
        callback(error)
      }
    })
    return socket
  }

  return { connect }
}
