'use strict';
// Git path normalisation (/api/git/changes|diff/{path}). The 23 regression
// cases of the previous shim, run end to end through rewriteUrl and directly.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const rl = require(path.join(__dirname, '..', 'runtime-links.js'));

const CID = 'abc123abc123abc123abc123abc123ab';
const ctx = rl.makeContext(new URL(`https://example.com/conversations/${CID}`));
const LOCAL = 'http://localhost:4443';
const BASE = `https://example.com/runtime/${CID}/4443`;

// [input path, expected path, what]
const REGRESSION = [
  // changes: bare repo name
  ['/api/git/changes/openhands-infra', '/api/git/changes/project/openhands-infra', 'changes: bare repo -> project/repo'],
  ['/api/git/changes/my-project', '/api/git/changes/project/my-project', 'changes: bare repo (my-project)'],
  ['/api/git/changes/.', '/api/git/changes/.', 'changes: "." unchanged'],
  // changes: encoded workspace paths
  ['/api/git/changes/%2Fworkspace%2Fproject', '/api/git/changes/.', 'changes: encoded /workspace/project -> .'],
  ['/api/git/changes/%2Fworkspace%2Fproject%2Fopenhands-infra', '/api/git/changes/project/openhands-infra', 'changes: encoded /workspace/project/repo'],
  ['/api/git/changes/%2Fworkspace%2Fproject%2Fmy-app', '/api/git/changes/project/my-app', 'changes: encoded /workspace/project/my-app'],
  ['/api/git/changes/%2Fopenhands%2Fproject', '/api/git/changes/.', 'changes: encoded /openhands/project -> .'],
  ['/api/git/changes/%2Fopenhands%2Fproject%2Fmy-repo', '/api/git/changes/project/my-repo', 'changes: encoded /openhands/project/repo'],
  // changes: plain workspace paths
  ['/api/git/changes//workspace/project', '/api/git/changes/.', 'changes: //workspace/project -> .'],
  ['/api/git/changes//workspace/project/openhands-infra', '/api/git/changes/project/openhands-infra', 'changes: //workspace/project/repo'],
  // diff: no repo, dotfile at the workspace root
  ['/api/git/diff/%2Fworkspace%2Fproject%2F.gitignore', '/api/git/diff/./.gitignore', 'diff: encoded dotfile -> ./.gitignore'],
  ['/api/git/diff/%2Fworkspace%2Fproject%2F.env', '/api/git/diff/./.env', 'diff: encoded .env -> ./.env'],
  ['/api/git/diff//workspace/project/.gitignore', '/api/git/diff/./.gitignore', 'diff: plain dotfile -> ./.gitignore'],
  ['/api/git/diff//workspace/project/.env.local', '/api/git/diff/./.env.local', 'diff: plain .env.local'],
  // diff: encoded workspace + repo + file
  ['/api/git/diff/%2Fworkspace%2Fproject%2Fopenhands-infra%2F.gitignore', '/api/git/diff/project/openhands-infra/.gitignore', 'diff: encoded repo/.gitignore'],
  ['/api/git/diff/%2Fworkspace%2Fproject%2Fopenhands-infra%2Fsrc%2Findex.ts', '/api/git/diff/project/openhands-infra/src%2Findex.ts', 'diff: encoded repo/src/index.ts, rest kept as sent'],
  ['/api/git/diff/%2Fworkspace%2Fproject%2Fmy-app%2FREADME.md', '/api/git/diff/project/my-app/README.md', 'diff: encoded my-app/README.md'],
  // diff: plain workspace + repo + file
  ['/api/git/diff//workspace/project/openhands-infra/.gitignore', '/api/git/diff/project/openhands-infra/.gitignore', 'diff: plain repo/.gitignore'],
  ['/api/git/diff//workspace/project/openhands-infra/src/index.ts', '/api/git/diff/project/openhands-infra/src/index.ts', 'diff: plain repo/src/index.ts'],
  // diff: bare repo + file
  ['/api/git/diff/openhands-infra%2F.gitignore', '/api/git/diff/project/openhands-infra/.gitignore', 'diff: bare repo%2F.gitignore'],
  ['/api/git/diff/openhands-infra%2Fproject%2Fopenhands-infra', '/api/git/diff/project/openhands-infra/project%2Fopenhands-infra', 'diff: bare repo, split at the first %2F'],
  ['/api/git/diff/some-repo', '/api/git/diff/project/some-repo', 'diff: bare repo only'],
  // non-git
  ['/api/conversations/abc123', '/api/conversations/abc123', 'non-git path unchanged']
];

// Cases beyond the regression file.
const EXTRA = [
  ['/api/git/changes/', '/api/git/changes/', 'TC-030: empty path unchanged'],
  ['/api/git/changes', '/api/git/changes', 'no path segment unchanged'],
  ['/api/git/diff/%2Fworkspace%2Fproject%2F', '/api/git/diff/.', 'encoded with trailing %2F -> .'],
  ['/api/git/diff//workspace/project/', '/api/git/diff/.', 'plain with trailing slash -> .'],
  ['/api/git/diff//openhands/project/r/a.py', '/api/git/diff/project/r/a.py', 'plain /openhands/project/repo/file'],
  ['/api/git/diff//workspace/project/a.py', '/api/git/diff/project/a.py', 'top-level entry is read as a repository'],
  ['/api/git/changes/%2fworkspace%2fproject%2frepo%2fa.txt', '/api/git/changes/project/repo/a.txt', 'lower-case %2f'],
  ['/api/git/changes/%2FWorkspace%2FProject', '/api/git/changes/.', 'encoded form is case-insensitive'],
  ['/api/git/diff/repo%2fsrc%2fa.ts', '/api/git/diff/project/repo/src%2fa.ts', 'bare repo with lower-case %2f'],
  ['/api/git/diff/.gitignore', '/api/git/diff/.gitignore', 'bare dotfile unchanged'],
  ['/api/git/diff/./.gitignore', '/api/git/diff/./.gitignore', 'normalised dotfile unchanged'],
  ['/api/git/changes/project/openhands-infra', '/api/git/changes/project/openhands-infra', 'normalised repo unchanged'],
  ['/api/git/diff/project/r/src%2Findex.ts', '/api/git/diff/project/r/src%2Findex.ts', 'normalised file unchanged'],
  ['/api/git/diff/%2Fworkspace%2Fprojects', '/api/git/diff/%2Fworkspace%2Fprojects', 'other absolute path unchanged'],
  ['/api/git/diff/%2Fetc%2Fpasswd', '/api/git/diff/%2Fetc%2Fpasswd', 'absolute path outside the workspace unchanged'],
  ['/api/git/diff//workspace/projects/x', '/api/git/diff//workspace/projects/x', 'plain other path unchanged'],
  ['/api/git/diff//workspace/project//x', '/api/git/diff/.//x', 'empty repo segment kept below "."'],
  ['/api/git/branches/main', '/api/git/branches/main', 'other git endpoints unchanged'],
  ['/api/gitx/changes/repo', '/api/gitx/changes/repo', 'not /api/git/']
];

test('git regression cases through rewriteUrl (fetch/XHR path)', async (t) => {
  assert.strictEqual(REGRESSION.length, 23);
  for (const [input, expected, what] of REGRESSION) {
    await t.test(what, () => assert.strictEqual(rl.rewriteUrl(LOCAL + input, ctx), BASE + expected));
  }
});

test('normalizeGitPath: regression cases and more', async (t) => {
  for (const [input, expected, what] of REGRESSION.concat(EXTRA)) {
    await t.test(what, () => assert.strictEqual(rl.normalizeGitPath(input), expected));
  }
});

test('normalizeGitPath is idempotent', () => {
  for (const [input] of REGRESSION.concat(EXTRA)) {
    const once = rl.normalizeGitPath(input);
    assert.strictEqual(rl.normalizeGitPath(once), once, input);
  }
});

test('query and fragment are kept and not part of the git path', () => {
  assert.strictEqual(
    rl.rewriteUrl(`${LOCAL}/api/git/changes/%2Fworkspace%2Fproject?ref=HEAD#x`, ctx),
    `${BASE}/api/git/changes/.?ref=HEAD#x`);
  assert.strictEqual(
    rl.rewriteUrl(`${LOCAL}/api/git/changes/openhands-infra?x=%2Fworkspace%2Fproject`, ctx),
    `${BASE}/api/git/changes/project/openhands-infra?x=%2Fworkspace%2Fproject`);
});

test('TC-031: changes and diff with a connected repository', () => {
  const c = rl.makeContext(new URL(`https://openhands.test/conversations/${CID}`));
  const base = `https://openhands.test/runtime/${CID}/8000`;
  assert.strictEqual(rl.rewriteUrl('http://localhost:8000/api/git/changes/openhands-infra', c),
    `${base}/api/git/changes/project/openhands-infra`);
  assert.strictEqual(rl.rewriteUrl('http://localhost:8000/api/git/diff/%2Fworkspace%2Fproject%2Fopenhands-infra%2F.gitignore', c),
    `${base}/api/git/diff/project/openhands-infra/.gitignore`);
  assert.strictEqual(rl.rewriteUrl('http://localhost:8000/api/git/diff/%2Fworkspace%2Fproject%2F.gitignore', c),
    `${base}/api/git/diff/./.gitignore`);
});

test('git paths are only touched on agent URLs that are rewritten', () => {
  const home = rl.makeContext(new URL('https://example.com/'));
  assert.strictEqual(rl.rewriteUrl(`${LOCAL}/api/git/changes/repo`, home), `${LOCAL}/api/git/changes/repo`);
  assert.strictEqual(rl.rewriteUrl('https://example.com/api/git/changes/repo', ctx), 'https://example.com/api/git/changes/repo');
});
