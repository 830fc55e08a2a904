/**
 * The benchmark: `npm run bench -- [write|e2e|drain|outbox|costs|soak|soak-embedded|soak-outbox] [options]` (`--help` lists them). No
 * scenario runs write, e2e and drain. Each prints a readable report; with `--json` the LAST line
 * of the output is one JSON object (the scenario's, or `{ scenario: "all", write, e2e, drain }`).
 * Every scenario measures its raw-PostgreSQL limit in the same run: the best of a sweep over the
 * client counts and statement sizes the emitter itself may use (bench/sweep.ts, bench/baseline.ts),
 * and the ratio is taken against it; the old single-client figure is reported beside it. The
 * delivery scenarios check what the ingest server produced by id (nothing lost, duplicates
 * explained), and a sample of whole events (all with --verify-all) against what was emitted,
 * seqnums gap-free (bench/verify.ts); the run exits 1 when anything is lost or wrong. Each scenario
 * uses its own tables (dropped afterwards), and is bounded in count and time. Profile with
 * `node --cpu-prof --cpu-prof-dir=DIR bench/main.ts e2e` and `node bench/profile.ts DIR/*.cpuprofile`.
 *
 * Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test).
 */
import * as os from "node:os"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import type { EmitterOptionsInput } from "../src/Config.ts"
import { awaitIdleMachine, backgroundCpu, type BenchArgs, type ScenarioResult } from "./common.ts"
import * as costs from "./costs.ts"
import * as drain from "./drain.ts"
import * as e2e from "./e2e.ts"
import * as outbox from "./outbox.ts"
import * as soak from "./soak.ts"
import * as soakOutbox from "./soakOutbox.ts"
import * as write from "./write.ts"

type Scenario = "write" | "e2e" | "drain" | "outbox" | "costs" | "soak" | "soak-embedded" | "soak-outbox"
const scenarios: Record<Scenario, (args: BenchArgs) => Effect.Effect<ScenarioResult, unknown>> = {
  write: write.run,
  e2e: e2e.run,
  drain: drain.run,
  outbox: outbox.run,
  costs: costs.run,
  soak: soak.runPostgres,
  "soak-embedded": soak.runEmbedded,
  "soak-outbox": soakOutbox.run
}
/** What runs without a scenario argument. */
const defaults: ReadonlyArray<Scenario> = ["write", "e2e", "drain", "outbox"]

const usage = `usage: npm run bench -- [write|e2e|drain|outbox|costs|soak|soak-embedded|soak-outbox] [--json] [--quick] [--events N] [--seconds N] [--minutes N] [--concurrency 1,10,100] [--opt key=value ...]
  write    emits committed per second at 1, 10, 100 emitters; emit latency at 5 000/s offered
  e2e      100 000 events from 100 emitters through PostgreSQL to a separate ingest server process
  drain    a 100 000-row backlog drained by the retransmitter
  outbox   transactions with one business row and one emitInTransaction each, against the same transactions without it
  costs    CPU per call of the hot-path pieces (not in the default run)
  soak     e2e at full speed for --minutes (default 10), per minute: events/s, emit → ack, table bytes, dead rows
  soak-embedded  the same on the embedded PGlite store (default 3 minutes)
  soak-outbox    the outbox benchmark's transactions for --minutes (default 5), per minute: transactions/s, commit → ack, both tables
  --json           print one JSON object as the last line
  --opt K=V        an emitter option for the run, e.g. --opt publishConcurrency=8 --opt writeLinger=0
  --quick          smaller counts, shorter phases (smoke run)
  --events N       events of e2e, backlog of drain, cap per write phase
  --seconds N      measuring time of each write phase (default 5)
  --concurrency L  closed-loop levels of write (default 1,10,100)
  --minutes N      how long soak runs
  --wait-idle S    before each scenario, wait up to S seconds for the machine to be < 25 % busy
  --baseline-seconds N  how long each point of the raw-PostgreSQL baseline sweep runs (default 1, 0.2 with --quick)
  --verify-all     the ingest server keeps every event whole and each is verified (default: a 1-in-16 sample)

Exits 1 when a scenario fails, any event is lost, corrupted or out of sequence, or an outbox transaction fails.`

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    json: { type: "boolean" },
    quick: { type: "boolean" },
    events: { type: "string" },
    seconds: { type: "string" },
    concurrency: { type: "string" },
    "wait-idle": { type: "string" },
    "baseline-seconds": { type: "string" },
    "verify-all": { type: "boolean" },
    minutes: { type: "string" },
    opt: { type: "string", multiple: true },
    help: { type: "boolean" }
  }
})

if (values.help === true) {
  console.log(usage)
  process.exit(0)
}

const chosen = positionals.length === 0 ? defaults : positionals
for (const name of chosen) {
  if (!(name in scenarios)) {
    console.error(`unknown scenario ${JSON.stringify(name)}\n${usage}`)
    process.exit(2)
  }
}

const number = (flag: string, raw: string | undefined): number | undefined => {
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!(Number.isFinite(n) && n > 0)) {
    console.error(`--${flag} must be a positive number, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return n
}

const parseOption = (pair: string): [string, unknown] => {
  const at = pair.indexOf("=")
  if (at <= 0) {
    console.error(`--opt expects key=value, got ${JSON.stringify(pair)}`)
    process.exit(2)
  }
  const raw = pair.slice(at + 1)
  const value = raw === "true" ? true : raw === "false" ? false : raw !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw
  return [pair.slice(0, at), value]
}

const args: BenchArgs = {
  options: Object.fromEntries((values.opt ?? []).map(parseOption)) as EmitterOptionsInput,
  events: number("events", values.events),
  seconds: number("seconds", values.seconds),
  quick: values.quick === true,
  minutes: number("minutes", values.minutes),
  concurrency: values.concurrency === undefined
    ? undefined
    : values.concurrency.split(",").map((c) => number("concurrency", c.trim())!).map(Math.round),
  baselineSeconds: number("baseline-seconds", values["baseline-seconds"]),
  verifyAll: values["verify-all"] === true
}

const waitIdle = number("wait-idle", values["wait-idle"])

// The whole run is bounded: a stuck scenario ends the process instead of hanging it.
const hardLimitMs = Math.max(15, (args.minutes ?? 10) + 8) * 60_000
const watchdog = setTimeout(() => {
  console.error(`benchmark: still running after ${hardLimitMs / 60_000} minutes; giving up`)
  process.exit(3)
}, hardLimitMs)
watchdog.unref()

const results: Record<string, ScenarioResult["json"]> = {}
let failed = false
for (const name of chosen as Array<Scenario>) {
  // Other work on the machine competes with the run for its cores: say how much there was.
  const background = waitIdle === undefined ? await backgroundCpu() : await awaitIdleMachine(25, waitIdle * 1000)
  console.log(`\n== ${name} == (machine busy ${background} % before the start, ${os.cpus().length} cores)`)
  const started = performance.now()
  try {
    const result = await Effect.runPromise(scenarios[name](args))
    for (const line of result.report) console.log(line)
    console.log(`  (${name} took ${Math.round((performance.now() - started) / 1000)} s)`)
    const failures = result.failures ?? []
    for (const failure of failures) console.error(`${name} FAILED: ${failure}`)
    if (failures.length > 0) failed = true
    results[name] = { ...result.json, backgroundCpuPct: background, ...(failures.length > 0 ? { failures } : {}) }
  } catch (error) {
    failed = true
    console.error(`${name} failed:`, error)
    results[name] = { scenario: name, error: error instanceof Error ? error.message : String(error) }
  }
}

if (values.json === true) {
  const only = chosen.length === 1 ? results[chosen[0]!] : undefined
  console.log(JSON.stringify(only ?? { scenario: "all", ...results }))
}
// Pipes to stdout are synchronous on Linux: everything printed is out before the exit.
process.exit(failed ? 1 : 0)
