#!/usr/bin/env node
// The `durable-emitter` command (package.json "bin"). Plain JavaScript, so it runs anywhere:
// - in a clone of the repository it runs the TypeScript sources (./main.ts; Node >= 22.18 strips
//   types), so there is nothing to build and nothing stale;
// - installed from npm (under node_modules, where Node does not strip types) or on a Node without
//   type stripping, it runs the build (../../dist/cli/main.js, made by `npm run build`).
import { existsSync, realpathSync } from "node:fs"
import { fileURLToPath, pathToFileURL } from "node:url"

const here = realpathSync(fileURLToPath(import.meta.url))
const source = new URL("./main.ts", pathToFileURL(here))
const built = new URL("../../dist/cli/main.js", pathToFileURL(here))
const canStripTypes = Boolean(process.features.typescript)
const underNodeModules = here.split(/[\\/]/).includes("node_modules")

// The command runs on @effect/platform-node, an optional peer dependency of the library (it pulls
// in a Redis client an application does not need): say which package to install when it is absent.
const cliPeer = "@effect/platform-node"
const start = async (href) => {
  try {
    await import(href)
  } catch (error) {
    if (error?.code !== "ERR_MODULE_NOT_FOUND" || !String(error.message).includes(`'${cliPeer}'`)) throw error
    process.stderr.write(
      `durable-emitter: the command needs the package ${cliPeer}, which is not installed: npm install ${cliPeer}\n`
    )
    process.exitCode = 1
  }
}

if (canStripTypes && !underNodeModules && existsSync(source)) {
  await start(source.href)
} else if (existsSync(built)) {
  await start(built.href)
} else {
  process.stderr.write(
    `durable-emitter: cannot start: ${fileURLToPath(built)} is missing (run \`npm run build\`)` +
      (canStripTypes ? "\n" : `, and this Node.js (${process.version}) cannot run the TypeScript sources (Node >= 22.18 can)\n`)
  )
  process.exitCode = 1
}
