/** `durable-emitter demo` (also `npm start`): flags, the run, the summary and the JSON line. */
import { Console, Effect, type LogLevel, Option } from "effect"
import { Command, Flag, GlobalFlag } from "effect/cli"
import { CommandFailed, userFacing } from "../errors.ts"
import * as Format from "../format.ts"
import { storeFlags } from "../target.ts"
import type { DemoSettings } from "./run.ts"

const check = (ok: boolean, reason: string) => (ok ? Effect.void : Effect.fail(new CommandFailed({ reason })))

const validate = (s: DemoSettings) =>
  Effect.all([
    check(s.events >= 1, "--events must be at least 1"),
    check(s.producers >= 1 && s.producers <= 10_000, "--producers must be between 1 and 10000"),
    check(s.rate >= 0, "--rate must be 0 (as fast as possible) or more"),
    check(s.outageMs >= 0, "--outage-ms must be 0 (no outage) or more"),
    check(s.payloadBytes >= 0 && s.payloadBytes <= 512 * 1024, "--payload-bytes must be between 0 and 524288"),
    check(s.poisonEvery >= 0, "--poison-every must be 0 (none) or more"),
    check(s.timeoutMs >= 1, "--timeout-ms must be at least 1"),
    check(
      Option.match(s.ingestUrl, { onNone: () => true, onSome: (url) => /^https?:\/\/[^/]+/i.test(url) }),
      "--ingest-url must be an http:// (h2c) or https:// URL"
    )
  ], { discard: true })

const plural = (n: number, one: string, many = `${one}s`) => `${Format.integer(n)} ${n === 1 ? one : many}`
/** The peak backlog, marked when it is the planner's estimate rather than a count. */
const peakText = (r: { readonly peakBacklog: number; readonly peakBacklogExact: boolean }) =>
  r.peakBacklogExact ? plural(r.peakBacklog, "row") : `~${plural(r.peakBacklog, "row")} (an estimate: the table was too large to count)`

export const demoCommand = Command.make("demo", {
  events: Flag.Int("events").pipe(Flag.withDescription("events to emit"), Flag.withDefault(20_000)),
  producers: Flag.Int("producers").pipe(Flag.withDescription("concurrent producers (fibers calling emit), as the requests of a busy service"), Flag.withDefault(64)),
  rate: Flag.Int("rate").pipe(
    Flag.withDescription("offered load in events per second, shared by the producers (0: as fast as they go)"),
    Flag.withDefault(2_000)
  ),
  outageMs: Flag.Int("outage-ms").pipe(
    Flag.withDescription("how long the ingest server is down, starting when 30 % of the events are emitted (0: no outage)"),
    Flag.withDefault(2_000)
  ),
  payloadBytes: Flag.Int("payload-bytes").pipe(Flag.withDescription("bytes of data per event"), Flag.withDefault(256)),
  poisonEvery: Flag.Int("poison-every").pipe(
    Flag.withDescription("every n-th event is one the server rejects for good, to show dead letters (0: none)"),
    Flag.withDefault(1_000)
  ),
  ingestUrl: Flag.String("ingest-url").pipe(
    Flag.withDescription(
      "publish to this ingest server instead of starting the reference one (no outage, no poison events; delivery is then " +
        "known only from the emitter's table and duplicates are unknown)"
    ),
    Flag.optional
  ),
  timeoutMs: Flag.Int("timeout-ms").pipe(
    Flag.withDescription("how long to wait for delivery after the last emit"),
    Flag.withDefault(60_000)
  ),
  keep: Flag.Boolean("keep").pipe(Flag.withDescription("keep the demo's tables or data directory at the end"), Flag.withDefault(false)),
  ...storeFlags
}, (flags) =>
  Effect.gen(function*() {
    const settings: DemoSettings = {
      events: flags.events,
      producers: flags.producers,
      rate: flags.rate,
      outageMs: flags.outageMs,
      payloadBytes: flags.payloadBytes,
      poisonEvery: flags.poisonEvery,
      ingestUrl: flags.ingestUrl,
      timeoutMs: flags.timeoutMs,
      keep: flags.keep,
      store: { databaseUrl: flags.databaseUrl, dataDir: flags.dataDir, tablePrefix: flags.tablePrefix }
    }
    yield* validate(settings)
    // The demo's own dead letters are expected: only errors are logged unless --log-level says otherwise.
    const logLevel = Option.getOrElse(yield* GlobalFlag.LogLevel, (): LogLevel.LogLevel => "Error")
    // Loaded when run: the whole emitter is not needed for `--help` or a usage error.
    const { runDemo } = yield* Effect.promise(() => import("./run.ts"))
    const { caughtUpMs, cleanupNote, emitMs, failures, lastDeliveryError, poisonEvery, result: r } = yield* runDemo(settings, logLevel)

    const ownServer = r.verifiedBy === "ingest-server"
    const failedEmits = [...failures].map(([tag, n]) => `${tag} ×${Format.integer(n)}`).join(", ")
    const lines = [
      "",
      "summary",
      `  emitted        ${plural(r.emitted, "event")} committed${r.failedEmits > 0 ? `; ${plural(r.failedEmits, "emit")} failed (${failedEmits}), nothing written for those` : ""}`,
      ownServer
        ? `  delivered      ${plural(r.delivered, "unique event")} received by the ingest server`
        : `  delivered      ${plural(r.delivered, "event")} acknowledged, as far as the emitter knows (their rows were deleted after the ack)`,
      ownServer
        ? `  duplicates     ${Format.integer(r.duplicates ?? 0)}${(r.duplicates ?? 0) > 0 ? " (re-sent when an answer was lost; at-least-once: consumers drop them by event id or seqnum)" : ""}`
        : "  duplicates     unknown (only your ingest server knows)",
      `  dead letters   ${Format.integer(r.deadLettered)}${
        r.deadLettered > 0
          ? ownServer && poisonEvery > 0
            ? ` (every ${Format.integer(poisonEvery)}th event is rejected for good by the server: kept in the dead-letter table, never retried)`
            : " (rejected for good: kept in the dead-letter table)"
          : ""
      }`,
      `  lost           ${Format.integer(r.lost)}${
        r.lost > 0 ? `  ← committed but neither delivered nor dead-lettered${r.pending > 0 ? ` (${plural(r.pending, "row")} still waiting in the table)` : ""}` : ""
      }`,
      ...(r.lost > 0 && lastDeliveryError !== undefined
        ? [`  why            the last delivery attempt failed: ${Format.oneLine(lastDeliveryError, 200)}`]
        : []),
      ...(r.outageMs > 0
        ? [
          `  outage         ${Format.millis(r.outageMs)}; backlog peaked at ${peakText(r)}` +
          (caughtUpMs === undefined ? "" : `, caught up ${Format.millis(caughtUpMs)} after the ingest came back`)
        ]
        : [`  backlog        peaked at ${peakText(r)}`]),
      ...(r.publishRetries > 0 || r.retransmitted > 0
        ? [
          `  recovery       ${plural(r.publishRetries, "request")} retried by the publisher; ${plural(r.retransmitted, "row")} re-sent by the retransmitter` +
          (r.leftToRetransmitter > 0 ? ` (${Format.integer(r.leftToRetransmitter)} had found the publish queue full)` : "")
        ]
        : []),
      `  throughput     ${Format.integer(r.eventsPerSecond)} events/s end to end (emits took ${Format.millis(emitMs)})`,
      `  emit latency   p50 ${Format.millis(r.emitLatencyMs.p50)}, p95 ${Format.millis(r.emitLatencyMs.p95)}, p99 ${Format.millis(r.emitLatencyMs.p99)} (max ${Format.millis(r.emitLatencyMs.max)}), until committed`,
      `  elapsed        ${Format.millis(r.elapsedMs)}`,
      ...(cleanupNote === "" ? [] : [`  ${cleanupNote}`]),
      JSON.stringify(r)
    ]
    yield* Console.log(lines.join("\n"))
    if (r.lost > 0) {
      return yield* new CommandFailed({
        reason: `${plural(r.lost, "committed event was", "committed events were")} lost: neither delivered nor dead-lettered` +
          (r.pending > 0 ? ` (${Format.integer(r.pending)} still waiting in the table, which is kept)` : "")
      })
    }
  }).pipe(userFacing)).pipe(
  Command.withShortDescription("emit events through an ingest outage and check that none is lost (npm start)"),
  Command.withDescription(
    "Emit events from concurrent producers through the whole emitter to the reference ingest server, take the server " +
      "down mid-run, wait until everything is delivered, and check every receipt against what the server received and " +
      "what was dead-lettered. Runs on the embedded store (a temporary data directory) unless DATABASE_URL or " +
      "--database-url is set (then in tables of its own). The last line of stdout is a JSON object; the exit code is " +
      "non-zero if any committed event was lost."
  ),
  Command.withExamples([
    { command: "durable-emitter demo", description: "20 000 events, 64 producers, a 2 s outage, on the embedded store" },
    { command: "durable-emitter demo --events 100000 --rate 0 --outage-ms 5000", description: "as fast as possible" },
    { command: "DATABASE_URL=postgres://localhost/test durable-emitter demo --keep", description: "on PostgreSQL, keep the tables" }
  ])
)
