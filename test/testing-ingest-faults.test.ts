/**
 * The faults' JSON form is decoded with its Schema everywhere it enters: a misspelt key is refused
 * with a message naming it (in process, at the control endpoint, at `durable-emitter
 * ingest-server --faults` and at the separate server process), and the CLI's help shows its defaults.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Code } from "@connectrpc/connect"
import { Effect } from "effect"
import { startControlServer } from "../src/testing/ingestControl.ts"
import { decodeFaultConfig, type FaultConfig, toCode } from "../src/testing/ingestFaultConfig.ts"
import { IngestServer } from "../src/testing/IngestServer.ts"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"

const cliMain = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))

// The machines that run this suite may be busy: a process start can take seconds.
const slow = 90_000

const run = (script: string, args: ReadonlyArray<string>, timeoutMs = slow - 5_000) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`${args.join(" ")}: no exit within ${timeoutMs} ms\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.once("error", reject)
    child.once("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

const problem = (input: unknown): string => {
  try {
    decodeFaultConfig(input)
  } catch (error) {
    return (error as Error).message
  }
  return "accepted"
}

describe("the faults' JSON form", () => {
  it("decodes every fault the server knows, normalized as the in-process setters would", () => {
    const config: FaultConfig = {
      latencyMs: 5,
      failNext: { count: 2, failure: { status: "unavailable", pushbackMs: 100, retryInfoMs: 50, retryAfter: "1" } },
      failFraction: { fraction: 0.5, failure: { status: Code.ResourceExhausted, message: "slow down" } },
      rejectRules: [{ type: "t", code: "SCHEMA_MISSING", reason: "no schema" }],
      hang: false,
      reset: { when: "after" },
      down: null,
      maxRequestBytes: { limit: 10, status: "INVALID_ARGUMENT" },
      results: { count: 1 },
      requireAuthorization: "Bearer x"
    }
    assert.deepStrictEqual(decodeFaultConfig(config), config)
    assert.deepStrictEqual(decodeFaultConfig({}), {})
    assert.strictEqual(toCode("Cancelled"), Code.Canceled)
    assert.strictEqual(toCode("RESOURCE_EXHAUSTED"), Code.ResourceExhausted)
  })

  it("refuses unknown keys, naming the key (and the fault it resembles), at any depth", () => {
    assert.strictEqual(
      problem({ latencyMS: 5 }).split(";")[0],
      "unknown fault \"latencyMS\" (did you mean \"latencyMs\"?)"
    )
    assert.include(problem({ latencyMS: 5 }), "the faults are latencyMs, failNext,")
    assert.include(problem({ lag: 5 }), "unknown fault \"lag\"; the faults are")
    assert.match(problem({ failNext: { count: 1, failure: { status: "unavailable", pushback: 5 } } }), /invalid faults: .*excess.*\["failNext"\]\["failure"\]\["pushback"\]/)
    assert.match(problem({ failNext: { count: 1, failure: { status: "unavailabel" } } }), /unknown gRPC status: unavailabel/)
    assert.match(problem({ latencyMs: "5" }), /invalid faults: .*\["latencyMs"\]/)
    assert.match(problem({ failFraction: { fraction: 2, failure: { status: 14 } } }), /invalid faults: .*\["failFraction"\]\["fraction"\]/)
    assert.match(problem([1]), /invalid faults/)
  })

  it.live("the control endpoint answers 400 to a misspelt fault and changes nothing", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make()
      const control = yield* Effect.acquireRelease(
        Effect.promise(() => startControlServer(server)),
        (c) => Effect.promise(() => c.close())
      )
      const post = (body: unknown) =>
        Effect.promise(async () => {
          const response = await fetch(`${control.url}/faults`, { method: "POST", body: JSON.stringify(body) })
          return { status: response.status, body: (await response.json()) as { error?: string; latencyMs?: number } }
        })
      const typo = yield* post({ latencyMS: 5 })
      assert.strictEqual(typo.status, 400)
      assert.include(typo.body.error, "\"latencyMS\"")
      assert.strictEqual(server.faults.state.latencyMs, 0)
      const right = yield* post({ latencyMs: 5 })
      assert.strictEqual(right.status, 200)
      assert.strictEqual(right.body.latencyMs, 5)
    }))

  it.live("the separate server process refuses a misspelt fault at the control endpoint", () =>
    Effect.gen(function*() {
      const server = yield* makeIngestServerProcess({ startTimeoutMs: slow - 10_000 })
      const error = yield* Effect.promise(() => server.faults({ hangs: true } as never).then(() => undefined, (e: Error) => e))
      assert.include(error?.message, "unknown fault \"hangs\" (did you mean")
    }), slow)
})

describe("durable-emitter ingest-server", () => {
  it("--faults with a misspelt key exits with one line naming it, before listening", async () => {
    const result = await run(cliMain, ["ingest-server", "--port", "0", "--faults", "{\"latencyMS\":5}"])
    assert.notStrictEqual(result.code, 0)
    assert.strictEqual(result.stdout, "", "no URL: the server did not start")
    assert.match(result.stderr, /^error: --faults: unknown fault "latencyMS" \(did you mean "latencyMs"\?\)/m)
    assert.notMatch(result.stderr, /^\s+at /m)
    const notJson = await run(cliMain, ["ingest-server", "--port", "0", "--faults", "{latencyMs:5}"])
    assert.notStrictEqual(notJson.code, 0)
    assert.match(notJson.stderr, /^error: --faults: not JSON/m)
  }, 2 * slow)

  it("--help shows the default port and host", async () => {
    const help = await run(cliMain, ["ingest-server", "--help"])
    assert.strictEqual(help.code, 0, help.stderr)
    assert.match(help.stdout, /--port integer\s+port to listen on \(default 50051;/)
    assert.match(help.stdout, /--host string\s+address to listen on \(default 127\.0\.0\.1\)/)
  }, slow)

  it("the process entry point refuses a misspelt fault with exit code 2", async () => {
    const main = fileURLToPath(new URL("../src/testing/ingest-server-main.ts", import.meta.url))
    const result = await run(main, ["--faults", "{\"latencyMS\":5}"])
    assert.strictEqual(result.code, 2)
    assert.include(result.stderr, "--faults: unknown fault \"latencyMS\"")
  }, slow)
})
