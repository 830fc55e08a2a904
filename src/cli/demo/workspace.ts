/**
 * What the demo owns while it runs, as one scoped resource: a data directory of its own (embedded
 * store) or tables of its own (PostgreSQL), and the reference ingest server in a child process of
 * its own (as the ingest service runs in production: on this process's event loop its work would
 * compete with the emitter's, and on the embedded store, which runs on that loop too, it took a
 * fifth of the demo's time). Released in reverse
 * order when the scope closes: the server, then the data, unless the run asks to keep it (--keep,
 * or rows still waiting: dropping them would lose them).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Option, Ref, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as Config from "../../Config.ts"
import type { InvalidConfig } from "../../Errors.ts"
import { IngestServerError } from "../../testing/IngestServer.ts"
import { makeIngestServerProcess } from "../../testing/IngestServerProcess.ts"
import { resolveInput, sqlClientLayer, type StoreFlags } from "../target.ts"

export const poisonType = "demo.poison"

/**
 * Tuning for a run of seconds, not hours; the environment (DURABLE_EMITTER_*) still wins. The
 * publisher retries a batch for up to 5 s; rows it gives up on (a longer outage) or that do not
 * fit its queue are the retransmitter's from 6 s after their commit, so the two do not send the
 * same row at once. Retries are capped at 1 s apart, so delivery resumes soon after an outage.
 */
const demoTuning: Config.EmitterOptionsInput = {
  requestTimeout: "2 seconds",
  retryMaxDelay: "1 second",
  retryBudget: "5 seconds",
  firstLease: "6 seconds",
  leaseBase: "3 seconds",
  leaseMax: "30 seconds",
  retransmitInterval: "200 millis",
  statsInterval: "500 millis",
  shutdownTimeout: "5 seconds"
}

/** Where the demo runs, decided (and validated) before anything is created. */
export interface Plan {
  readonly onPostgres: boolean
  /** Tables of its own on PostgreSQL (no --table-prefix): dropped at the end. */
  readonly ownTables: boolean
  /** A data directory of its own (no --data-dir): removed at the end. */
  readonly ownDir: boolean
  /** The user's ingest server, or none: the demo starts the reference one. */
  readonly ingestUrl: Option.Option<string>
  /** The emitter's options, with a stand-in ingest URL when the demo starts its own server (its URL is known once it listens). */
  readonly input: Config.EmitterOptionsInput
  /** `input` resolved. */
  readonly options: Config.EmitterOptions
}

/** The demo's tuning, the environment over it, the flags over that, and the demo's own names where no flag says. */
export const plan = (store: StoreFlags, ingestUrl: Option.Option<string>): Effect.Effect<Plan, InvalidConfig> =>
  Effect.gen(function*() {
    const stamp = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)
    const env = yield* Config.fromEnv
    const onPostgres = Option.isSome(store.databaseUrl) || env.databaseUrl !== undefined
    const own: Config.EmitterOptionsInput = {
      name: "durable-emitter-demo",
      ...(Option.isNone(store.dataDir) ? { dataDir: path.join(os.tmpdir(), `durable-emitter-demo-${stamp}-${process.pid}`) } : {}),
      ...(Option.isNone(store.tablePrefix)
        ? { tablePrefix: onPostgres ? `demo_${stamp}_${process.pid}` : Config.defaults.tablePrefix }
        : {}),
      // Any valid URL stands in for the reference server's until it listens.
      ingestUrl: Option.getOrElse(ingestUrl, () => "http://127.0.0.1:1")
    }
    const { input, options } = yield* resolveInput(store, own, demoTuning)
    return {
      onPostgres,
      ownTables: onPostgres && Option.isNone(store.tablePrefix),
      ownDir: !onPostgres && Option.isNone(store.dataDir),
      ingestUrl,
      input,
      options
    }
  })

/** Whether to keep the demo's data at the end, and what became of it (the summary's last note). */
export interface Cleanup {
  readonly keep: boolean
  readonly note: string
}

/** What the demo asks of its reference ingest server. */
export interface DemoServer {
  readonly url: string
  /** Distinct events received so far. */
  readonly uniqueIds: Effect.Effect<number, IngestServerError>
  /** Refuses connections until `up`. */
  readonly down: Effect.Effect<void, IngestServerError>
  readonly up: Effect.Effect<void, IngestServerError>
  /** Every distinct id received, and how many deliveries repeated one. */
  readonly received: Effect.Effect<{ readonly ids: ReadonlySet<string>; readonly duplicates: number }, IngestServerError>
}

export interface Workspace {
  /** The reference ingest server, or undefined with --ingest-url. */
  readonly server: DemoServer | undefined
  readonly ingestUrl: string
  /** The emitter's options, with `ingestUrl`. */
  readonly input: Config.EmitterOptionsInput
}

/** A data directory of the demo's own, removed at the end unless kept. */
const ownDirectory = (dir: string, cleanup: Ref.Ref<Cleanup>) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdirSync(dir, { recursive: true })),
    () =>
      Effect.flatMap(Ref.get(cleanup), ({ keep }) =>
        keep
          ? Ref.update(cleanup, (c) => ({ ...c, note: `data kept in ${dir}` }))
          : Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
  )

/** Every table of the prefix, as the store made them (whatever its schema holds). */
const tablesOf = (sql: SqlClient.SqlClient, prefix: string) =>
  Effect.map(
    sql.unsafe<{ name: string }>(
      "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1) ORDER BY 1",
      [`${prefix}_`]
    ),
    (rows) => rows.map((row) => row.name)
  )

/** Tables of the demo's own, dropped at the end unless kept. */
const ownTables = (options: Config.EmitterOptions, cleanup: Ref.Ref<Cleanup>) =>
  Effect.addFinalizer(() =>
    Effect.flatMap(Ref.get(cleanup), ({ keep }) =>
      keep
        ? Ref.update(cleanup, (c) => ({ ...c, note: `tables kept: ${options.tablePrefix}_*` }))
        : SqlClient.SqlClient.use((sql) =>
          Effect.flatMap(tablesOf(sql, options.tablePrefix), (names) =>
            names.length === 0 ? Effect.void : sql.unsafe(`DROP TABLE IF EXISTS ${names.join(", ")} CASCADE`))
        ).pipe(
          Effect.provide(sqlClientLayer(options)),
          Effect.catchCause((cause) =>
            Ref.update(cleanup, (c) => ({ ...c, note: `could not drop the demo's tables ${options.tablePrefix}_*: ${String(cause)}` }))
          )
        ))
  )

/** Acquires what the plan says the demo owns; everything is released with the scope. */
export const acquire = (p: Plan, cleanup: Ref.Ref<Cleanup>): Effect.Effect<Workspace, IngestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    if (p.ownDir) yield* ownDirectory(p.options.dataDir, cleanup)
    if (p.ownTables) yield* ownTables(p.options, cleanup)
    if (Option.isSome(p.ingestUrl)) {
      return { server: undefined, ingestUrl: p.ingestUrl.value, input: { ...p.input, ingestUrl: p.ingestUrl.value } }
    }
    const server = yield* referenceServer
    return { server, ingestUrl: server.url, input: { ...p.input, ingestUrl: server.url } }
  })

const serverCall = <A>(what: string, call: () => Promise<A>) =>
  Effect.tryPromise({
    try: call,
    catch: (error) => new IngestServerError({ reason: `${what}: ${error instanceof Error ? error.message : String(error)}` })
  })

/** The reference ingest server in a child process, stopped with the scope. */
const referenceServer: Effect.Effect<DemoServer, IngestServerError, Scope.Scope> = Effect.map(
  makeIngestServerProcess({
    record: "ids",
    faults: {
      rejectRules: [{ type: poisonType, code: "VALIDATION_FAILED", reason: `the demo's ingest server rejects ${poisonType} events` }]
    }
  }),
  (child): DemoServer => ({
    url: child.url,
    uniqueIds: serverCall("reading the ingest server's counts", () => child.stats().then((s) => s.uniqueIds ?? 0)),
    down: serverCall("taking the ingest server down", () => child.faults({ down: "refuse" })),
    up: serverCall("bringing the ingest server up", () => child.faults({ down: null })),
    received: serverCall("reading what the ingest server received", async () => {
      const [ids, stats] = await Promise.all([child.ids(), child.stats()])
      return { ids: new Set(ids), duplicates: stats.duplicates ?? 0 }
    })
  })
)
