// Bundle chat_page.mjs (and the `ai` package it imports) into one script for a browser page.
import { build } from "esbuild";

const result = await build({
  entryPoints: [new URL("./chat_page.mjs", import.meta.url).pathname],
  bundle: true,
  format: "iife",
  platform: "browser",
  write: false,
  logLevel: "error",
});
process.stdout.write(result.outputFiles[0].text);
