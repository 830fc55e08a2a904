import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer, Logger, Option, Redacted } from "effect"
import * as Config from "../src/Config.ts"
import { storeLayer, transportLayer } from "../src/config/layers.ts"
import { DurableEmitter, startLine } from "../src/DurableEmitter.ts"
import { InvalidConfig, StoreError } from "../src/Errors.ts"
import { IngestServer } from "../src/testing/IngestServer.ts"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { ScriptedTransport } from "../src/testing/ScriptedTransport.ts"
import { silentServer } from "./support/silentServer.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { Transport } from "../src/Transport.ts"

const rejects = (input: Config.EmitterOptionsInput, option: string, rule: RegExp) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(Config.resolve(input))
    assert.instanceOf(error, InvalidConfig)
    assert.strictEqual(error.option, option)
    assert.match(error.rule, rule)
    assert.include(error.message, option)
  })

describe("Config.resolve", () => {
  it.effect("applies the defaults and takes durations as Duration inputs", () =>
    Effect.gen(function*() {
      const options = yield* Config.resolve({ writeLinger: "2 millis", requestTimeout: 1500, ttl: "2 hours" })
      assert.strictEqual(options.writeLingerMs, 2)
      assert.strictEqual(options.requestTimeoutMs, 1500)
      assert.strictEqual(options.ttlMs, 2 * 3_600_000)
      assert.strictEqual(options.publishBatchSize, Config.defaults.publishBatchSize)
      assert.isTrue(Option.isNone(options.databaseUrl))
    }))

  it.effect("keeps secrets redacted", () =>
    Effect.gen(function*() {
      const options = yield* Config.resolve({ databaseUrl: "postgres://u:secret@h/db", ingestHeaders: { Authorization: "Bearer t0k3n" } })
      assert.strictEqual(Redacted.value(Option.getOrThrow(options.databaseUrl)), "postgres://u:secret@h/db")
      assert.strictEqual(Redacted.value(options.ingestHeaders.authorization!), "Bearer t0k3n")
      const described = JSON.stringify(Config.describe(options))
      assert.notInclude(described, "secret")
      assert.notInclude(described, "t0k3n")
      assert.strictEqual(Config.describe(options).store, "postgres")
    }))

  for (const key of Config.positiveInts) {
    it.effect(`rejects a zero, negative or fractional ${key}`, () =>
      Effect.gen(function*() {
        yield* rejects({ [key]: 0 }, key, /positive integer/)
        yield* rejects({ [key]: -3 }, key, /positive integer/)
        yield* rejects({ [key]: 1.5 }, key, /positive integer/)
      }))
  }

  for (const key of Config.positiveDurations.map(Config.optionName)) {
    it.effect(`rejects a zero or infinite ${key}`, () =>
      Effect.gen(function*() {
        yield* rejects({ [key]: 0 }, key, /positive, finite duration/)
        yield* rejects({ [key]: "Infinity" }, key, /positive, finite duration/)
      }))
  }

  for (const key of Config.nonNegativeDurations.map(Config.optionName)) {
    it.effect(`accepts a zero ${key} but not a negative one`, () =>
      Effect.gen(function*() {
        const options = yield* Config.resolve({ [key]: 0 })
        assert.strictEqual(options[`${key}Ms` as keyof typeof options], 0)
        yield* rejects({ [key]: -1 }, key, /zero or a positive/)
      }))
  }

  it.effect("rejects something that is not a duration", () => rejects({ ttl: "soon" as never }, "ttl", /must be a duration/))
  it.effect("rejects an event limit above the request limit", () =>
    rejects({ maxEventBytes: 2_000_000, maxRequestBytes: 1_000_000 }, "maxEventBytes", /maxRequestBytes/))
  it.effect("rejects a retry base above its cap", () =>
    rejects({ retryBaseDelay: "10 seconds", retryMaxDelay: "1 second" }, "retryBaseDelay", /retryMaxDelay/))
  it.effect("rejects a lease base above its cap", () => rejects({ leaseBase: "1 hour", leaseMax: "1 minute" }, "leaseBase", /leaseMax/))
  it.effect("rejects a first lease that the fast path could outlive", () =>
    rejects({ firstLease: "6 seconds", requestTimeout: "5 seconds" }, "firstLease", /requestTimeout/))
  it.effect("rejects a claim lease shorter than a request", () =>
    rejects({ leaseBase: "1200 millis", requestTimeout: "1 second" }, "leaseBase", /requestTimeout/))
  it.effect("rejects a TTL shorter than the first lease", () => rejects({ ttl: "30 seconds", firstLease: "1 minute" }, "ttl", /firstLease/))
  it.effect("rejects a table prefix that is not an identifier", () =>
    rejects({ tablePrefix: "events; drop table x" }, "tablePrefix", /identifier/))
  it.effect("rejects an ingest URL without http(s)", () => rejects({ ingestUrl: "localhost:50051" }, "ingestUrl", /http/))
  it.effect("rejects an empty name", () => rejects({ name: "" }, "name", /non-empty/))
  it.effect("rejects a non-boolean switch", () => rejects({ retransmit: "yes" as never }, "retransmit", /true or false/))
  it.effect("rejects an unknown option", () => rejects({ bogus: 1 } as never, "bogus", /unknown option/))
})

describe("Config.fromEnv", () => {
  const fromEnv = (env: Record<string, string>) =>
    Config.fromEnv.pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })))

  it.effect("reads DATABASE_URL and DURABLE_EMITTER_* variables", () =>
    Effect.gen(function*() {
      const input = yield* fromEnv({
        DATABASE_URL: "postgres://localhost/db",
        DURABLE_EMITTER_INGEST_URL: "https://ingest:443",
        DURABLE_EMITTER_PUBLISH_BATCH_SIZE: "250",
        DURABLE_EMITTER_WRITE_LINGER: "3 millis",
        DURABLE_EMITTER_RETRANSMIT: "false",
        DURABLE_EMITTER_INGEST_HEADERS: "Authorization=Bearer abc, x-tenant=t1"
      })
      const options = yield* Config.resolve(input)
      assert.strictEqual(Redacted.value(Option.getOrThrow(options.databaseUrl)), "postgres://localhost/db")
      assert.strictEqual(options.ingestUrl, "https://ingest:443")
      assert.strictEqual(options.publishBatchSize, 250)
      assert.strictEqual(options.writeLingerMs, 3)
      assert.isFalse(options.retransmit)
      assert.strictEqual(Redacted.value(options.ingestHeaders.authorization!), "Bearer abc")
      assert.strictEqual(Redacted.value(options.ingestHeaders["x-tenant"]!), "t1")
    }))

  it.effect("a DURABLE_EMITTER_* variable that names no option is refused, with the nearest one", () =>
    Effect.gen(function*() {
      const typo = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_REQEUST_TIMEOUT: "5 seconds", HOME: "/root" }))
      assert.instanceOf(typo, InvalidConfig)
      assert.strictEqual((typo as InvalidConfig).option, "DURABLE_EMITTER_REQEUST_TIMEOUT")
      assert.include((typo as InvalidConfig).rule, "did you mean DURABLE_EMITTER_REQUEST_TIMEOUT?")
      const unrelated = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_COLOUR: "blue" }))
      assert.notInclude((unrelated as InvalidConfig).rule, "did you mean")
      // every option's variable is known, including names that are prefixes of others
      yield* fromEnv({ DURABLE_EMITTER_RETRANSMIT: "true", DURABLE_EMITTER_RETRANSMIT_INTERVAL: "2 seconds", OTHER_THING: "x" })
    }))

  it.effect("names the variable of a malformed value", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_PUBLISH_BATCH_SIZE: "many" }))
      assert.include(String(error), "DURABLE_EMITTER_PUBLISH_BATCH_SIZE")
    }))

  it("maps every option to its variable", () => {
    assert.strictEqual(Config.envName("databaseUrl"), "DATABASE_URL")
    assert.strictEqual(Config.envName("maxEventBytes"), "DURABLE_EMITTER_MAX_EVENT_BYTES")
    assert.strictEqual(Config.envName("retryBudget"), "DURABLE_EMITTER_RETRY_BUDGET")
  })
})

describe("Config: hostile values (issue 13)", () => {
  const fromEnv = (env: Record<string, string>) =>
    Config.fromEnv.pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })))
  const refusedEnv = (env: Record<string, string>, variable: string, rule: RegExp) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv(env))
      assert.instanceOf(error, InvalidConfig, String(error))
      assert.strictEqual(error.option, variable)
      assert.match(error.rule, rule)
    })

  it.effect("an unparsable environment value is an InvalidConfig naming the variable, not a ConfigError", () =>
    Effect.gen(function*() {
      yield* refusedEnv({ DURABLE_EMITTER_WRITE_BATCH_SIZE: "abc" }, "DURABLE_EMITTER_WRITE_BATCH_SIZE", /positive integer.*"abc"/)
      yield* refusedEnv({ DURABLE_EMITTER_WRITE_BATCH_SIZE: " 100 " }, "DURABLE_EMITTER_WRITE_BATCH_SIZE", /digits only/)
      yield* refusedEnv({ DURABLE_EMITTER_WRITE_BATCH_SIZE: "1e3" }, "DURABLE_EMITTER_WRITE_BATCH_SIZE", /digits only/)
      yield* refusedEnv({ DURABLE_EMITTER_COMMIT_TIMEOUT: "nonsense" }, "DURABLE_EMITTER_COMMIT_TIMEOUT", /must be a duration/)
      yield* refusedEnv({ DURABLE_EMITTER_GZIP: "maybe" }, "DURABLE_EMITTER_GZIP", /true or false.*"maybe"/)
      yield* refusedEnv({ DURABLE_EMITTER_INGEST_HEADERS: "authorization" }, "DURABLE_EMITTER_INGEST_HEADERS", /name=value/)
      // what parses is taken as it is
      const input = yield* fromEnv({ DURABLE_EMITTER_WRITE_BATCH_SIZE: "100", DURABLE_EMITTER_GZIP: "yes", DURABLE_EMITTER_COMMIT_TIMEOUT: "3 seconds" })
      const options = yield* Config.resolve(input)
      assert.strictEqual(options.writeBatchSize, 100)
      assert.isTrue(options.gzip)
      assert.strictEqual(options.commitTimeoutMs, 3000)
    }))

  it.effect("a variable set but empty is refused, never read as unset", () =>
    Effect.gen(function*() {
      // DATABASE_URL="" would otherwise build on the embedded store: durability moved to local disk in silence.
      yield* refusedEnv({ DATABASE_URL: "" }, "DATABASE_URL", /set but empty/)
      yield* refusedEnv({ DURABLE_EMITTER_INGEST_URL: "" }, "DURABLE_EMITTER_INGEST_URL", /set but empty/)
      yield* refusedEnv({ DURABLE_EMITTER_INGEST_URL: "", DURABLE_EMITTER_NAME: "x" }, "DURABLE_EMITTER_INGEST_URL", /set but empty/)
      yield* refusedEnv({ DATABASE_URL: "" }, "DATABASE_URL", /set but empty/).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env: { DATABASE_URL: "" }, preserveEmptyStrings: true }))
      )
      // and in code
      yield* rejects({ databaseUrl: "" }, "databaseUrl", /empty/)
      yield* rejects({ ingestUrl: "" }, "ingestUrl", /non-empty/)
    }))

  it.effect("a malformed DATABASE_URL is an InvalidConfig, not a StoreError at migrate time", () =>
    Effect.gen(function*() {
      yield* rejects({ databaseUrl: "not a url" }, "databaseUrl", /not a URL/)
      yield* rejects({ databaseUrl: "postgres://u@h:99999/db" }, "databaseUrl", /port outside 1-65535/)
      yield* rejects({ databaseUrl: "postgres://u@h:0/db" }, "databaseUrl", /port outside 1-65535/)
      yield* rejects({ databaseUrl: "mysql://u:p@h/db" }, "databaseUrl", /postgres:\/\/.*got scheme mysql/)
      // what sql-pg would refuse later (the store's rule) is refused here, naming the option
      yield* rejects({ databaseUrl: "postgres://u@h/db?sslmode=maybe" }, "databaseUrl", /sslmode/)
      const error = yield* Effect.flip(Config.resolve({ databaseUrl: "mysql://u:s3cr3t@h/db" }))
      assert.notInclude(error.message, "s3cr3t")
      const env = yield* Effect.flip(Effect.flatMap(fromEnv({ DATABASE_URL: "not a url" }), (input) => Config.resolve(input)))
      assert.strictEqual(env.option, "databaseUrl")
      for (const ok of ["postgres://u:p@h:5432/db", "postgresql://h/db", "POSTGRES://h/db"]) {
        const options = yield* Config.resolve({ databaseUrl: ok })
        assert.isTrue(Option.isSome(options.databaseUrl))
      }
    }))

  it.effect("ingestHeaders with an invalid name or a line break in a value are refused at build", () =>
    Effect.gen(function*() {
      yield* rejects({ ingestHeaders: { "bad header": "x" } }, "ingestHeaders", /invalid header name "bad header"/)
      yield* rejects({ ingestHeaders: { "x-ok:": "x" } }, "ingestHeaders", /invalid header name/)
      yield* rejects({ ingestHeaders: { authorization: "Bearer a\r\nx-evil: 1" } }, "ingestHeaders", /line break/)
      yield* rejects({ ingestHeaders: { authorization: Redacted.make("a\nb") } }, "ingestHeaders", /line break/)
      const env = yield* Effect.flip(Effect.flatMap(fromEnv({ DURABLE_EMITTER_INGEST_HEADERS: "x y=1" }), (input) => Config.resolve(input)))
      assert.strictEqual(env.option, "ingestHeaders")
      const options = yield* Config.resolve({ ingestHeaders: { "X-Api-Key": "k" } })
      assert.strictEqual(Redacted.value(options.ingestHeaders["x-api-key"]!), "k")
    }))

  it.effect("ingestUrl errors name ingestUrl; schemes are case-insensitive", () =>
    Effect.gen(function*() {
      yield* rejects({ ingestUrl: "http://a b:1" }, "ingestUrl", /http:\/\/ \(h2c\) or https:\/\//)
      yield* rejects({ ingestUrl: "ftp://host:1" }, "ingestUrl", /got scheme ftp/)
      const options = yield* Config.resolve({ ingestUrl: "HTTP://127.0.0.1:50051" })
      assert.strictEqual(options.ingestUrl, "HTTP://127.0.0.1:50051")
      yield* Config.resolve({ ingestUrl: "Https://ingest.example:443" })
    }))

  it.live("an ingest URL with an upper-case scheme reaches the server through the options' transport", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make()
      const options = yield* Config.resolve({ ingestUrl: server.url.replace("http://", "HTTP://") })
      const pong = yield* Transport.use((transport) => transport.ping).pipe(Effect.provide(transportLayer(options)))
      assert.strictEqual(pong, "pong")
    }).pipe(Effect.scoped), 20_000)

  it.live("connectTimeout is an option (default 10 s) and bounds opening a PostgreSQL connection", () =>
    Effect.gen(function*() {
      assert.strictEqual(Config.defaults.connectTimeoutMs, 10_000)
      const input = yield* fromEnv({ DURABLE_EMITTER_CONNECT_TIMEOUT: "2 seconds" })
      assert.strictEqual((yield* Config.resolve(input)).connectTimeoutMs, 2_000)
      yield* rejects({ connectTimeout: 0 }, "connectTimeout", /positive, finite duration/)

      const { port, sockets } = yield* silentServer
      const options = yield* Config.resolve({ databaseUrl: `postgres://postgres@127.0.0.1:${port}/test`, connectTimeout: "500 millis" })
      const started = Date.now()
      const error = yield* Effect.flip(Effect.scoped(Layer.build(storeLayer(options))))
      const elapsed = Date.now() - started
      assert.instanceOf(error, StoreError)
      assert.isAtLeast(sockets.length, 1, "never reached the silent server")
      assert.isBelow(elapsed, 5_000)
    }).pipe(Effect.scoped), 20_000)
})

describe("Config: what each layer takes (issue 14)", () => {
  it.effect("layerNoDeps takes only the options of what it builds: the Store's and the Transport's are refused", () =>
    Effect.gen(function*() {
      for (const [option, value] of [["ingestUrl", "http://h:1"], ["tablePrefix", "other"], ["databaseUrl", "postgres://h/db"], ["gzip", true]] as const) {
        const error = yield* Effect.flip(Config.resolve({ [option]: value }, ["emitter"]))
        assert.strictEqual(error.option, option)
        assert.match(error.rule, /not used here: the (Store|Transport) is provided by you/)
        const built = yield* Effect.flip(Effect.scoped(Layer.build(
          DurableEmitter.layerNoDeps({ [option]: value } as never).pipe(Layer.provide(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer())))
        )))
        assert.instanceOf(built, InvalidConfig)
        assert.strictEqual(built.option, option)
      }
      // requestTimeout is the services' too: the lease rules assume it of any Transport
      yield* Config.resolve({ requestTimeout: "1 second", name: "n" }, ["emitter"])
      const described = Config.describe(Config.defaults, ["emitter"])
      assert.notProperty(described, "ingestUrl")
      assert.notProperty(described, "tablePrefix")
      assert.notProperty(described, "store")
      assert.property(described, "requestTimeout")
    }))

  it("the gRPC transport's default deadline is the emitter's requestTimeout default", () => {
    assert.strictEqual(Duration.toMillis(GrpcTransport.defaultTimeout), Config.defaults.requestTimeoutMs)
  })

  it.effect("a relative dataDir is resolved once, against the working directory; memory:// is kept", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* Config.resolve({ dataDir: "some/dir" })).dataDir, path.resolve("some/dir"))
      assert.strictEqual((yield* Config.resolve({})).dataDir, path.resolve(".data/durable-emitter"))
      assert.strictEqual((yield* Config.resolve({ dataDir: "memory://" })).dataDir, "memory://")
      const line = startLine(yield* Config.resolve({ dataDir: "some/dir" }), ["store", "transport", "emitter"])
      assert.include(line, `embedded store in ${path.resolve("some/dir")}`)
    }))

  it.effect("the start is one INFO line: where events go and what differs from the defaults", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel === "Info") lines.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      })
      yield* Effect.scoped(Layer.build(
        DurableEmitter.layerNoDeps({ name: "one-line", publishBatchSize: 250, writeLinger: 0 }).pipe(
          Layer.provide(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
        )
      )).pipe(Effect.provide(Logger.layer([logger])))
      // (other services may say that they started; the settings are one line)
      assert.deepStrictEqual(lines.filter((line) => line.startsWith("durable emitter")), [
        `durable emitter "one-line" started: Store and Transport provided by the caller; publishBatchSize=250`,
        "durable emitter stopped"
      ])
      assert.isAtMost(lines.length, 3, lines.join("\n"))
      const full = startLine(yield* Config.resolve({ databaseUrl: "postgres://u:secret@h/db", tablePrefix: "billing" }), [
        "store",
        "transport",
        "emitter"
      ])
      assert.strictEqual(full, `durable emitter "durable-emitter" started: PostgreSQL, tables billing_*; ingest http://127.0.0.1:50051; every other option at its default`)
      assert.notInclude(full, "secret")
    }))
})
