/**
 * The `durable-emitter` command: demo, bench, migrate, inspect, dead-letters, ingest-server.
 *
 *   node src/cli/main.ts <command> [flags]      (from the source tree; Node ≥ 22.18 strips the types)
 *   node dist/cli/main.js <command> [flags]     (after `npm run build`)
 *   durable-emitter <command> [flags]           (the package's bin: ./bin.js picks one of the above)
 */
import * as fs from "node:fs"
// Deep imports: the package's index loads every platform module (half a second per start).
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Effect, Exit, Layer, Logger, References, Runtime } from "effect"
import { CliConfig, CliOutput, Command, GlobalFlag } from "effect/cli"
import { benchCommand, benchInstalled, passBenchArgs } from "./bench.ts"
import { deadLettersCommand } from "./deadLetters.ts"
import { demoCommand } from "./demo/command.ts"
import { ingestServerCommand, stopsOnSignal } from "./ingestServer.ts"
import { inspectCommand } from "./inspect.ts"
import { migrateCommand } from "./migrate.ts"

const version = (() => {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }
    return pkg.version ?? "unknown"
  } catch {
    return "unknown"
  }
})()

const durableEmitter = Command.make("durable-emitter").pipe(
  Command.withDescription(
    "Durable event emission: events committed to PostgreSQL (or the embedded store) before emit returns, then delivered " +
      "in batches over gRPC. Store commands read DATABASE_URL and DURABLE_EMITTER_* like the library; flags override them."
  ),
  Command.withSubcommands([
    demoCommand,
    migrateCommand,
    inspectCommand,
    deadLettersCommand,
    ingestServerCommand,
    ...(benchInstalled() ? [benchCommand] : [])
  ]),
  Command.withExamples([
    { command: "durable-emitter demo", description: "emit 20 000 events through an ingest outage, on the embedded store" },
    { command: "DATABASE_URL=postgres://localhost/app durable-emitter inspect" },
    { command: "durable-emitter dead-letters list --since 2025-01-31T00:00:00Z" }
  ])
)

const colors = process.stdout.isTTY === true && process.env.NO_COLOR === undefined
const defaultFormatter = CliOutput.defaultFormatter({ colors, globalFlags: "summary" })

/** Help on stdout; usage errors as short lines on stderr with a pointer to --help, not a help dump. */
const formatter: CliOutput.Formatter = {
  ...defaultFormatter,
  formatError: (error) => `error: ${error.message}`,
  formatErrors: (errors) => errors.map((error) => `error: ${error.message}`).join("\n")
}
const presenter: CliOutput.Presenter = {
  present: (event) => {
    switch (event._tag) {
      case "Help":
        return Console.log(formatter.formatHelpDoc(event.helpDoc))
      case "InvalidInvocation":
        return Console.error(`${formatter.formatErrors(event.errors)}\nrun '${event.commandPath.join(" ")} --help' for usage`)
      case "Version":
        return Console.log(formatter.formatVersion(event.name, event.version))
    }
  }
}

const CliLayer = Layer.mergeAll(
  NodeServices.layer,
  CliOutput.layer(formatter),
  CliOutput.layerPresenter(presenter),
  CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions, GlobalFlag.LogLevel] }),
  // stdout is for results (the demo's last line is JSON); the library's logs go to stderr, warnings and up
  // unless --log-level says otherwise.
  Layer.succeed(Logger.LogToStderr, true),
  Layer.succeed(References.MinimumLogLevel, "Warn")
)

const main = (argv: ReadonlyArray<string>) =>
  Command.runWith(durableEmitter, { version })(passBenchArgs(argv)).pipe(Effect.provide(CliLayer))

/** Exit codes: 0, 1 for a failure (2+ passed on from the benchmark), 130 when interrupted by a signal. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) && stopsOnSignal.gracefully
    ? onExit(0) // a server told to stop has done its job
    : Runtime.defaultTeardown(exit, onExit)

main(process.argv.slice(2)).pipe(NodeRuntime.runMain({ teardown }))
