// The front end's module graph, checked without a browser: every import in static/js resolves to a
// file that exports the names asked for, templates load only page entry modules (static/js/pages/)
// and every page module is loaded by some template.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const JS = join(ROOT, "static", "js");

function filesUnder(dir, suffix) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(suffix))
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name));
}

const modules = filesUnder(JS, ".js");
const source = new Map(modules.map((file) => [file, readFileSync(file, "utf8")]));

// import { a, b as c } from "./x.js";  import * as x from "./x.js";  export { a } from "./x.js";
const FROM = /^\s*(import|export)\s+([^;]*?)\s*from\s+"([^"]+)";?/gm;
const BARE = /^\s*import\s+"([^"]+)";?/gm;

function importsOf(text) {
  const found = [];
  for (const m of text.matchAll(FROM)) {
    const braces = /\{([^}]*)\}/.exec(m[2]);
    const names = braces ? braces[1].split(",").map((n) => n.trim().split(/\s+as\s+/)[0]).filter(Boolean) : [];
    found.push({ specifier: m[3], names });
  }
  for (const m of text.matchAll(BARE)) found.push({ specifier: m[1], names: [] });
  return found;
}

function exportsOf(text) {
  const names = new Set();
  for (const m of text.matchAll(/^export\s+(?:async\s+)?(?:function\*?|class|const|let|var)\s+([A-Za-z_$][\w$]*)/gm)) names.add(m[1]);
  for (const m of text.matchAll(/^export\s*\{([^}]*)\}/gm)) {
    for (const part of m[1].split(",")) {
      const name = part.trim().split(/\s+as\s+/).pop();
      if (name) names.add(name);
    }
  }
  return names;
}

test("every relative import in static/js resolves and the target exports what is imported", () => {
  const problems = [];
  for (const [file, text] of source) {
    for (const { specifier, names } of importsOf(text)) {
      const where = relative(ROOT, file);
      if (!specifier.startsWith(".")) {
        problems.push(`${where}: non-relative import ${specifier}`);
        continue;
      }
      const target = resolve(dirname(file), specifier);
      if (!existsSync(target)) {
        problems.push(`${where}: ${specifier} does not exist`);
        continue;
      }
      const exported = exportsOf(source.get(target) ?? readFileSync(target, "utf8"));
      for (const name of names) if (!exported.has(name)) problems.push(`${where}: ${specifier} does not export ${name}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("templates load page modules from static/js/pages/ only, and every page module is loaded", () => {
  const loaded = new Set();
  const problems = [];
  for (const file of filesUnder(join(ROOT, "templates"), ".html")) {
    for (const m of readFileSync(file, "utf8").matchAll(/\{%\s*static\s+'(js\/[^']+)'\s*%\}/g)) {
      const path = join(ROOT, "static", m[1]);
      if (!existsSync(path)) problems.push(`${relative(ROOT, file)}: ${m[1]} does not exist`);
      if (!m[1].startsWith("js/pages/")) problems.push(`${relative(ROOT, file)}: ${m[1]} is not a page module`);
      loaded.add(path);
    }
  }
  for (const file of modules) {
    if (file.startsWith(join(JS, "pages") + "/") && !loaded.has(file)) problems.push(`${relative(ROOT, file)}: no template loads it`);
  }
  assert.deepEqual(problems, []);
});

test("library modules never import page modules", () => {
  const pages = join(JS, "pages") + "/";
  const problems = [];
  for (const [file, text] of source) {
    for (const { specifier } of importsOf(text)) {
      if (resolve(dirname(file), specifier).startsWith(pages)) problems.push(`${relative(ROOT, file)} imports ${specifier}`);
    }
  }
  assert.deepEqual(problems, []);
});
