/**
 * The Publisher over the real GrpcTransport: against the reference ingest server (the attempt
 * count of a retry arrives as `grpc-previous-rpc-attempts`), and against a closed port (the
 * warning names the refused connection). Real sockets mean real time (it.live), kept short.
 */
import * as net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { IngestServer } from "../src/testing/IngestServer.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { setupOver } from "./support/publisher.ts"

/** A loopback port nothing listens on (taken, then released). */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
)

// A budget the slowest first connection fits in; the retry throttle ends a refused batch after 5 attempts.
const fastRetries = { retryBaseDelayMs: 20, retryMaxDelayMs: 50, retryBudgetMs: 5_000, requestTimeoutMs: 1_000 }

describe("Publisher over gRPC", () => {
  it.live("a retry carries grpc-previous-rpc-attempts: the number of earlier attempts of the request", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make()
      server.faults.failNext(2, { status: "unavailable", message: "try again" })
      const { backlog, commit, publisher } = yield* setupOver(GrpcTransport.layer({ url: server.url, timeout: "1 second" }), fastRetries)
      yield* publisher.offer(yield* commit(2))
      yield* publisher.flush
      const attempts = server.received.requests.map((r) => r.headers[GrpcTransport.previousAttemptsHeader])
      assert.deepStrictEqual(attempts, [undefined, "1", "2"])
      assert.strictEqual(server.received.events.length, 2)
      assert.strictEqual(yield* backlog, 0)
    }))

  it.live("with the ingest down, the warning names the cause: the refused connection, host and port", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel === "Warn") warnings.push(JSON.stringify(message))
      })
      const { backlog, commit, publisher } = yield* setupOver(
        GrpcTransport.layer({ url: `http://127.0.0.1:${port}`, timeout: "1 second" }),
        fastRetries,
        Logger.layer([logger]) as Layer.Layer<never>
      )
      yield* publisher.offer(yield* commit(3))
      yield* publisher.flush
      assert.strictEqual(yield* backlog, 3)
      assert.strictEqual(warnings.length, 1, warnings.join("\n"))
      assert.include(warnings[0]!, "delivery postponed")
      assert.match(warnings[0]!, new RegExp(`(retry budget exhausted|retries throttled)[^"]*; last error: [^"]*ECONNREFUSED 127\\.0\\.0\\.1:${port}`))
    }))
})
