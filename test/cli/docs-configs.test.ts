/**
 * Every YAML example in the docs that is marked as a whole config (its first line starts with
 * `# full config`) is validated by `sluice validate`, the command a reader would run on it, so
 * the docs cannot drift from the schema. Fragments are not marked and not checked.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { defaultConfig, parseConfigText } from '../../src/config/config';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'sluice.js');
const MARK = /^# full config\b/;

interface Block { file: string; line: number; text: string }

/** The ```yaml blocks of a markdown text, with the line each starts on. */
function yamlBlocks(file: string, markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```ya?ml\s*$/.test(lines[i])) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
    if (end === lines.length) throw new Error(`${file}:${i + 1}: unterminated yaml block`);
    blocks.push({ file, line: start + 1, text: lines.slice(start, end).join('\n') + '\n' });
    i = end;
  }
  return blocks;
}

function validate(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [BIN, 'validate', file], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && (typeof (err as NodeJS.ErrnoException).code === 'string' || err.killed)) { reject(err); return; }
      resolve({ code: child.exitCode, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-docs-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const DOCS = ['docs/configuration.md', 'docs/deployment.md', 'README.md'];
const marked = DOCS.flatMap((f) => yamlBlocks(f, readFileSync(path.join(ROOT, f), 'utf8'))).filter((b) => MARK.test(b.text));

t.test('the docs mark their whole configs', async (t) => {
  const per = (f: string) => marked.filter((b) => b.file === f).length;
  t.equal(per('docs/configuration.md'), 6, 'configuration.md: the embedded default, the seed example, authorization, rate limits, adaptiveLimit, the full example');
  t.equal(per('docs/deployment.md'), 2, 'deployment.md: low-intrusion mode, with a registry');
  t.equal(per('README.md'), 3, 'README: the explicit listener, the two sidecars of the mTLS walkthrough');
});

for (const b of marked) {
  t.test(`${b.file}:${b.line} passes sluice validate`, async (t) => {
    const file = path.join(dir, `${path.basename(b.file, '.md')}-${b.line}.yaml`);
    writeFileSync(file, b.text);
    const r = await validate(file);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, `${file}: valid\n`);
  });
}

t.test('the documented embedded default is the one Sluice runs with', async (t) => {
  const block = marked.find((b) => b.file === 'docs/configuration.md' && /\n## The embedded default\n\n```yaml\n$/.test(
    readFileSync(path.join(ROOT, b.file), 'utf8').split('\n').slice(0, b.line - 1).join('\n') + '\n'));
  t.ok(block, 'found under "The embedded default"');
  if (block) t.same(parseConfigText(block.text, 'docs'), defaultConfig());
});

t.test('the full example lists every top-level section', async (t) => {
  const block = marked.find((b) => b.file === 'docs/configuration.md' && /^dubbo:/m.test(b.text) && /^accessLog:/m.test(b.text));
  t.ok(block, 'found');
  if (!block) return;
  const full = parseConfigText(block.text, 'docs');
  const written = new Set(block.text.split('\n').filter((l) => /^[a-zA-Z]+:/.test(l)).map((l) => l.slice(0, l.indexOf(':'))));
  t.same([...written].sort(), Object.keys(full).sort(), 'every section of the config is written out in the example');
});

t.test('a marked block that does not validate is caught', async (t) => {
  const [bad] = yamlBlocks('x.md', 'text\n\n```yaml\n# full config\nroutes:\n  - action: { cluster: nowhere }\n```\n');
  t.ok(MARK.test(bad.text));
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(file, bad.text);
  const r = await validate(file);
  t.equal(r.code, 1);
  t.match(r.stderr, /\/routes\/0\/action\/cluster: unknown cluster "nowhere"/);
});
