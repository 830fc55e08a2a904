/**
 * The library as an application gets it: `npm pack`, the tarball installed in temporary apps.
 *
 * - The app (test/fixtures/consumer) gets the tarball extracted into its node_modules, and every
 *   other package linked from this repository's node_modules (offline, and fast): there the
 *   README's TypeScript blocks and src/layers.ts (every public layer, exported) are compiled with
 *   `declaration: true`, the README's test example runs as an @effect/vitest test, and the
 *   README's PostgreSQL example runs against DATABASE_URL and the reference ingest server.
 * - The pinned app (test/fixtures/consumer-pinned) is a PostgreSQL-only app on effect 4.0.6,
 *   installed by npm itself (`--prefer-offline`: from npm's cache when it has the packages, else
 *   the registry), so npm's own peer resolution decides how many copies of effect there are.
 *
 * Builds the library first when dist/ is missing or older than src/.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll } from "vitest"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import { databaseUrl, dropTables, freshPrefix } from "./support/pg.ts"

const repo = fileURLToPath(new URL("..", import.meta.url))
const fixtures = path.join(repo, "test", "fixtures")
const node = process.execPath
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * The environment of every child: `npm test` passes its own settings on as npm_* variables (the
 * repository as the local prefix, …), which must not steer an install in another directory.
 */
const childEnv = (env: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const out: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!key.toLowerCase().startsWith("npm_")) out[key] = value
  return { ...out, ...env }
}

/** Runs a command to its end (or its timeout); never rejects, the caller asserts on the result. */
const run = (command: string, args: ReadonlyArray<string>, options: {
  readonly cwd: string
  readonly env?: Record<string, string>
  readonly timeoutMs?: number
}): Promise<Ran> =>
  new Promise((resolve) => {
    execFile(command, args, {
      cwd: options.cwd,
      env: childEnv(options.env),
      timeout: options.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024
    }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resolve({ code, stdout, stderr: error !== null && stderr === "" ? String(error) : stderr })
    })
  })

const ok = (what: string, ran: Ran) => {
  assert.strictEqual(ran.code, 0, `${what} failed:\n${ran.stdout}\n${ran.stderr}`)
  return ran
}

const newestMtime = (dir: string): number => {
  let newest = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs)
  }
  return newest
}

const ensureBuilt = async () => {
  const built = path.join(repo, "dist", "index.js")
  if (fs.existsSync(built) && fs.statSync(built).mtimeMs >= newestMtime(path.join(repo, "src"))) return
  ok("npm run build", await run(npm, ["run", "build"], { cwd: repo, timeoutMs: 300_000 }))
}

/** `npm pack` into `dir` (already built: no prepack), answering the tarball's path. */
const pack = async (dir: string): Promise<string> => {
  const ran = ok("npm pack", await run(npm, ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], { cwd: repo }))
  const [info] = JSON.parse(ran.stdout) as ReadonlyArray<{ readonly filename: string }>
  return path.join(dir, info!.filename)
}

/** The README's ```ts blocks, in order. */
const readmeBlocks = (): ReadonlyArray<string> =>
  [...fs.readFileSync(path.join(repo, "README.md"), "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!)

/**
 * The app: the fixture, the README's blocks (tests under test/, the rest under src/), the
 * tarball extracted as node_modules/durable-emitter, every other package linked from the repo.
 */
const makeApp = async (dir: string, tarball: string) => {
  fs.cpSync(path.join(fixtures, "consumer"), dir, { recursive: true })
  fs.mkdirSync(path.join(dir, "test"))
  readmeBlocks().forEach((code, i) => {
    const file = code.includes("it.effect(") ? path.join("test", `readme-${i}.test.ts`) : path.join("src", `readme-${i}.ts`)
    fs.writeFileSync(path.join(dir, file), code)
  })
  const modules = path.join(dir, "node_modules")
  fs.mkdirSync(modules)
  for (const name of fs.readdirSync(path.join(repo, "node_modules"))) {
    if (name === "durable-emitter" || name.startsWith(".package-lock")) continue
    fs.symlinkSync(path.join(repo, "node_modules", name), path.join(modules, name))
  }
  const own = path.join(modules, "durable-emitter")
  fs.mkdirSync(own)
  ok("tar", await run("tar", ["-xzf", tarball, "-C", own, "--strip-components=1"], { cwd: dir }))
}

/** The pinned app: npm installs the tarball next to effect 4.0.6 (peers resolved by npm). */
const makePinnedApp = async (dir: string, tarball: string) => {
  fs.cpSync(path.join(fixtures, "consumer-pinned"), dir, { recursive: true })
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"))
  manifest.dependencies["durable-emitter"] = `file:${tarball}`
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(manifest, null, 2))
  return run(npm, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], {
    cwd: dir,
    timeoutMs: 180_000
  })
}

/** Every installed copy of `name` under `modules` (nested ones included), with its version. */
const copiesOf = (modules: string, name: string): ReadonlyArray<string> => {
  const found: Array<string> = []
  const walk = (dir: string) => {
    if (!fs.existsSync(dir)) return
    for (const entry of fs.readdirSync(dir)) {
      const at = path.join(dir, entry)
      if (entry.startsWith("@")) {
        for (const scoped of fs.readdirSync(at)) visit(path.join(at, scoped), `${entry}/${scoped}`)
      } else {
        visit(at, entry)
      }
    }
  }
  const visit = (at: string, pkg: string) => {
    if (pkg === name) found.push(`${path.relative(modules, at)}@${JSON.parse(fs.readFileSync(path.join(at, "package.json"), "utf8")).version}`)
    walk(path.join(at, "node_modules"))
  }
  walk(modules)
  return found
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "durable-emitter-consumer-"))
const app = path.join(work, "app")
const pinned = path.join(work, "pinned")
let pinnedInstall: Promise<Ran> | undefined
const startedAt = Date.now()

beforeAll(async () => {
  await ensureBuilt()
  const tarball = await pack(work)
  pinnedInstall = makePinnedApp(pinned, tarball) // the network part: runs while the app is tested
  await makeApp(app, tarball)
}, 360_000)

afterAll(async () => {
  await pinnedInstall?.catch(() => undefined)
  fs.rmSync(work, { recursive: true, force: true })
  console.warn(`consumer tests: ${((Date.now() - startedAt) / 1000).toFixed(1)} s including build, pack and install`)
})

const installed = (...parts: ReadonlyArray<string>) => path.join(app, "node_modules", "durable-emitter", ...parts)

describe("the packed library in an app", () => {
  it.effect("ships the LICENSE, declaration maps that reach the shipped sources, and no bench command", () =>
    Effect.promise(async () => {
      assert.match(fs.readFileSync(installed("LICENSE"), "utf8"), /^MIT License/)
      for (const entry of ["index", "testing/index"]) {
        const map = JSON.parse(fs.readFileSync(installed("dist", `${entry}.d.ts.map`), "utf8")) as { sources: Array<string> }
        const source = path.resolve(path.dirname(installed("dist", entry)), map.sources[0]!)
        assert.isTrue(fs.existsSync(source), `${entry}.d.ts.map points at ${source}`)
      }
      assert.isFalse(fs.existsSync(installed("bench")))
      const help = ok("durable-emitter --help", await run(node, [installed("src", "cli", "bin.js"), "--help"], { cwd: app }))
      assert.include(help.stdout, "dead-letters")
      assert.notInclude(help.stdout, "bench")
    }), 60_000)

  it.effect("compiles the README's TypeScript blocks and every public layer with declaration: true", () =>
    Effect.promise(async () => {
      assert.isAtLeast(readmeBlocks().length, 3)
      ok("tsc", await run(node, [path.join(app, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: app }))
      const declarations = fs.readFileSync(path.join(app, "types", "src", "layers.d.ts"), "utf8").replace(/\/\*[\s\S]*?\*\//g, "")
      assert.include(declarations, "export declare const full: Layer.Layer<")
      assert.notMatch(declarations, /Sequencer|Handoff|Retransmitter|Liveness|dist\//, declarations)
    }), 120_000)

  it.effect("runs the README's test example as an @effect/vitest test", () =>
    Effect.promise(async () => {
      const vitest = path.join(app, "node_modules", "vitest", "vitest.mjs")
      const ran = ok("vitest", await run(node, [vitest, "run", "--root", app], { cwd: app, env: { NO_COLOR: "1" } }))
      assert.match(ran.stdout, /Tests\s+1 passed \(1\)/, ran.stdout)
    }), 120_000)

  it.effect("runs the README's PostgreSQL example against DATABASE_URL", () =>
    Effect.promise(async () => {
      const index = readmeBlocks().findIndex((code) => code.includes("DurableEmitter.layer)"))
      assert.notStrictEqual(index, -1)
      const server = await startIngestServer()
      const prefix = freshPrefix()
      try {
        const ran = ok("the README example", await run(node, [path.join("src", `readme-${index}.ts`)], {
          cwd: app,
          env: { DATABASE_URL: databaseUrl, DURABLE_EMITTER_INGEST_URL: server.url, DURABLE_EMITTER_TABLE_PREFIX: prefix }
        }))
        assert.match(ran.stdout + ran.stderr, /committed [0-9a-f-]{36} as #1/)
        await server.received.waitForEvents(1, 10_000)
        const [event] = server.received.events
        assert.strictEqual(event?.type, "invoice.paid")
      } finally {
        await server.close()
        await Effect.runPromise(dropTables(prefix))
      }
    }), 120_000)
})

describe("a PostgreSQL-only app pinned to effect 4.0.6, installed by npm", () => {
  it.effect("has one copy of effect (the app's) and neither PGlite, @effect/platform-node nor redis", () =>
    Effect.promise(async () => {
      ok("npm install", await pinnedInstall!)
      const modules = path.join(pinned, "node_modules")
      assert.deepStrictEqual(copiesOf(modules, "effect"), ["effect@4.0.6"])
      assert.strictEqual(copiesOf(modules, "durable-emitter").length, 1)
      for (const absent of ["@electric-sql/pglite", "@effect/platform-node", "redis"]) {
        assert.deepStrictEqual(copiesOf(modules, absent), [], `${absent} is installed`)
      }
    }), 200_000)

  it.effect("emits through layerWith({ databaseUrl }), and the embedded store names the package it needs", () =>
    Effect.promise(async () => {
      ok("npm install", await pinnedInstall!)
      const prefix = freshPrefix()
      const server = await startIngestServer()
      try {
        const ran = ok("main.mjs", await run(node, ["main.mjs"], {
          cwd: pinned,
          env: { DATABASE_URL: databaseUrl, TABLE_PREFIX: prefix, INGEST_URL: server.url, DATA_DIR: path.join(pinned, ".data") }
        }))
        const out = JSON.parse(ran.stdout.trim().split("\n").at(-1)!)
        assert.deepInclude(out.receipt, { seq: "1", source: "pinned", type: "app.started" })
        assert.strictEqual(server.received.events[0]?.id, out.receipt.id)
        assert.deepInclude(out.missing, { _tag: "PackageMissing", packageName: "@electric-sql/pglite" })
        assert.include(out.missing.message, "npm install @electric-sql/pglite")
      } finally {
        await server.close()
        await Effect.runPromise(dropTables(prefix))
      }
    }), 200_000)

  it.effect("the CLI names @effect/platform-node when it is not installed", () =>
    Effect.promise(async () => {
      ok("npm install", await pinnedInstall!)
      const bin = path.join(pinned, "node_modules", "durable-emitter", "src", "cli", "bin.js")
      const ran = await run(node, [bin, "--help"], { cwd: pinned })
      assert.strictEqual(ran.code, 1)
      assert.include(ran.stderr, "npm install @effect/platform-node")
    }), 200_000)
})
