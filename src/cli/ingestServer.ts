/**
 * `durable-emitter ingest-server`: the reference Chip Ingress server (gRPC over h2c), for trying the
 * emitter out or for an application's own tests. Prints its URL as the first line of stdout, then
 * every event it accepts as one JSON line (or appends them to --jsonl FILE); runs until SIGINT or
 * SIGTERM.
 */
import { Console, Effect, Option, Schedule } from "effect"
import { Command, Flag } from "effect/cli"
import { CommandFailed, userFacing } from "./errors.ts"
import * as Format from "./format.ts"

const defaultPort = 50051
const defaultHost = "127.0.0.1"

/**
 * `--faults`: JSON decoded with the faults Schema, so a misspelt key is refused, not ignored.
 * (Loaded when used, like the server: the other commands do not load the test kit.)
 */
export const parseFaults = (json: string) =>
  Effect.promise(() => import("../testing/ingestFaultConfig.ts")).pipe(
    Effect.flatMap(({ decodeFaultConfig }) =>
      Effect.try({
        try: () => decodeFaultConfig(JSON.parse(json)),
        catch: (error) =>
          new CommandFailed({
            reason: `--faults: ${
              error instanceof SyntaxError ? `not JSON: ${error.message}` : error instanceof Error ? error.message : String(error)
            }`
          })
      })
    )
  )

/** Set once the server listens: from then on SIGINT/SIGTERM is the normal way to stop (exit code 0). */
export const stopsOnSignal = { gracefully: false }

export const ingestServerCommand = Command.make("ingest-server", {
  port: Flag.Int("port").pipe(
    Flag.withDescription(`port to listen on (default ${defaultPort}; 0: any free port)`),
    Flag.withDefault(defaultPort)
  ),
  host: Flag.String("host").pipe(Flag.withDescription(`address to listen on (default ${defaultHost})`), Flag.withDefault(defaultHost)),
  jsonl: Flag.String("jsonl").pipe(
    Flag.withDescription("append received events to this file as JSON lines instead of printing them"),
    Flag.optional
  ),
  quiet: Flag.Boolean("quiet").pipe(Flag.withDescription("print only the URL, not the events"), Flag.withDefault(false)),
  faults: Flag.String("faults").pipe(
    Flag.withDescription(`faults to inject, as JSON, e.g. '{"latencyMs":50}' or '{"failFraction":{"fraction":0.1,"failure":{"status":"unavailable"}}}'`),
    Flag.optional
  )
}, (flags) =>
  Effect.gen(function*() {
    if (flags.port < 0 || flags.port > 65535) return yield* new CommandFailed({ reason: `--port must be 0..65535, got ${flags.port}` })
    const faults = Option.isSome(flags.faults) ? yield* parseFaults(flags.faults.value) : undefined
    const printEvents = Option.isNone(flags.jsonl) && !flags.quiet
    const { IngestServer, receivedEventJson } = yield* Effect.promise(() => import("../testing/IngestServer.ts"))
    const server = yield* IngestServer.make({
      host: flags.host,
      port: flags.port,
      // Printing: keep events until they are printed. Otherwise keep nothing but counts.
      record: printEvents ? "events" : "counts",
      ...(Option.isSome(flags.jsonl) ? { jsonl: flags.jsonl.value } : {}),
      ...(faults === undefined ? {} : { faults })
    })
    let total = 0
    yield* Effect.addFinalizer(() =>
      Console.error(`ingest server stopped: ${Format.integer(printEvents ? total : server.received.stats.events)} events received`)
    )
    stopsOnSignal.gracefully = true
    yield* Console.log(server.url)
    yield* Console.error(
      `ingest server listening on ${server.url} (gRPC, h2c)${
        Option.isSome(flags.jsonl) ? `; events go to ${flags.jsonl.value}` : ""
      }; stop with Ctrl-C`
    )
    if (!printEvents) return yield* Effect.never
    // One synchronous step: nothing can be recorded between reading the events and clearing them.
    const drain = Effect.sync(() => {
      const events = server.received.events
      if (events.length === 0) return
      let out = ""
      for (const event of events) out += JSON.stringify(receivedEventJson(event)) + "\n"
      total += events.length
      server.received.clear()
      process.stdout.write(out)
    })
    return yield* drain.pipe(Effect.repeat(Schedule.spaced("50 millis")), Effect.ensuring(drain), Effect.andThen(Effect.never))
  }).pipe(Effect.scoped, userFacing)).pipe(
  Command.withShortDescription("run the reference ingest server, printing what it receives"),
  Command.withDescription(
    "Run the reference ingest server (the Chip Ingress gRPC API: Publish, PublishBatch, Ping) until SIGINT/SIGTERM. " +
      "Prints its URL first, then each event it accepts as a JSON line. Point an emitter at it with DURABLE_EMITTER_INGEST_URL."
  ),
  Command.withExamples([
    { command: `durable-emitter ingest-server --port ${defaultPort}` },
    { command: "durable-emitter ingest-server --port 0 --jsonl events.jsonl" }
  ])
)
