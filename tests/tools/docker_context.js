// docker_context.js ROOT [OVERLAY...]: the files `docker build ROOT` sends, picked by
// ROOT/.dockerignore with @balena/dockerignore (a port of Docker's own matcher), as `SIZE<TAB>PATH`
// lines. Each OVERLAY directory is laid over ROOT (a test's stand-ins for a big build/, var/...).
"use strict";
const fs = require("fs");
const path = require("path");
const ignore = require("@balena/dockerignore");

const [root, ...overlays] = process.argv.slice(2);
let rules = "";
try {
  rules = fs.readFileSync(path.join(root, ".dockerignore"), "utf8");
} catch (e) {
  if (e.code !== "ENOENT") throw e;
}
const ig = ignore().add(rules);
// As Docker does, an excluded directory is skipped whole unless an exception (`!PATTERN`) could
// bring part of it back; then its files are matched one by one.
const exceptions = rules.split(/\r?\n/).some((line) => line.trim().startsWith("!"));

const sent = new Map();
function walk(base, rel) {
  for (const entry of fs.readdirSync(path.join(base, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${entry.name}` : entry.name;
    const excluded = ig.ignores(p);
    if (entry.isDirectory()) {
      if (!excluded || exceptions) walk(base, p);
    } else if (!excluded && !entry.isSocket()) {
      // Docker leaves sockets out; a symbolic link goes as a link (lstat: its own size).
      sent.set(p, fs.lstatSync(path.join(base, p)).size);
    }
  }
}
for (const base of [root, ...overlays]) walk(base, "");
for (const [p, size] of sent) console.log(`${size}\t${p}`);
