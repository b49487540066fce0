// JavaScript engine of Code Actions: boots ahead of demand, reads run requests, runs the user's Run(engine).
//
// Protocol (spoken by the runner supervisor):
//   stdin  <- requests: a JSON line {run_id, code_id, source, params, headers, method, secrets,
//             max_log_chars, reuse, body_size}, then body_size raw bytes of body (runner/wire.py)
//   fd 3   -> {"t":"ready"} once booted (a Node spare counts as started only then), then JSON
//             lines {"t":"log",...} | {"t":"result",...} | {"t":"error","kind":"exception",...}
//             | {"t":"script"} | {"t":"action"} | {"t":"done","code":0|1}
//   stdout/stderr are left alone: the supervisor keeps them as info/error logs.
//   A source that defines no Run is a script, as the original ran it (`node -e`): {"t":"script"}
//   tells the supervisor its stdout is the result, and the run ends when the event loop empties.
//   {"t":"action"}, right before Run is called, tells it the source has a Run: its stdout is
//   logs (which the supervisor may then send on to the API while the run goes on).
//   Without `reuse`: exit 0 after Run settles, 1 after an error (the exit ends the run).
//   With `reuse` (a warm worker kept for repeated runs of the same code): after Run settles, its
//   timers are cleared and, when nothing of the run is left in the event loop, {"t":"done"} ends
//   the run and the next request line is awaited; otherwise the process exits as without `reuse`.
//   Each run evaluates the source afresh in a new vm context: no global state survives a run.
//
// Everything that can be loaded before the request is loaded at boot, so a run only pays for
// compiling and running the user's source.
'use strict';

const fs = require('node:fs');
const util = require('node:util');
const vm = require('node:vm');
const { createRequire } = require('node:module');

// Warm the built-ins user code commonly reaches for; each costs a few ms on first require.
for (const name of [
  'assert', 'buffer', 'child_process', 'crypto', 'dns', 'events', 'fs/promises', 'http', 'https',
  'net', 'os', 'path', 'querystring', 'stream', 'stream/promises', 'string_decoder', 'timers/promises',
  'tls', 'url', 'zlib',
]) {
  require(`node:${name}`);
}
// fetch (undici) is loaded lazily by Node on first use: touch it now, not on the request path.
new globalThis.Response('').text().catch(() => {});
void new globalThis.Headers({ a: 'b' });

// Kept from boot: user code replacing these globals must not break the protocol.
const writeSync = fs.writeSync;
const stringify = JSON.stringify;
const exit = process.exit.bind(process);

const EVENTS_FD = 3;
const ENGINE_FILE = __filename;
const ACTION_FILE = 'action.js';
// Bounds an error text we report; the supervisor enforces its own output limits too.
const MAX_ERROR_CHARS = 65536;
// Python's str.strip() removes exactly the characters str.isspace() accepts; JS trim() differs
// (it keeps \x1c-\x1f and \x85, removes \ufeff), so bodies are stripped with Python's set.
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');

function emit(event) {
  const data = Buffer.from(`${stringify(event)}\n`, 'utf8');
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += writeSync(EVENTS_FD, data, offset, data.length - offset);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
    }
  }
}

function truncate(text, limit) {
  if (!(limit >= 0) || text.length <= limit) return text;
  // Count code points like Python does, and never split a surrogate pair.
  let end = 0;
  let count = 0;
  while (end < text.length && count < limit) {
    const code = text.charCodeAt(end);
    end += code >= 0xd800 && code <= 0xdbff && end + 1 < text.length ? 2 : 1;
    count += 1;
  }
  return text.slice(0, end);
}

// The plain toString()s of the main realm and of the run's vm context (each has its own).
let plainToStrings = new Set([Object.prototype.toString, Array.prototype.toString]);

function logText(message) {
  if (message === undefined) return '';
  if (typeof message === 'string') return message;
  if (message !== null && typeof message === 'object') {
    // String() of a plain object or array says nothing useful ("[object Object]", "1,2"); show it.
    const own = message.toString;
    if (own === undefined || plainToStrings.has(own)) {
      return util.inspect(message, { depth: 6, breakLength: Infinity });
    }
  }
  return String(message);
}

// Formats like Python's json.dumps() defaults (", " and ": " separators, non-ASCII escaped), so
// a result reads the same whichever language produced it. Numbers keep JavaScript's notation.
function pythonJson(value) {
  const compact = stringify(value);
  if (compact === undefined) return undefined;
  return compact.replace(/"(?:[^"\\]|\\.)*"|[,:]/g, (token) => {
    if (token === ',') return ', ';
    if (token === ':') return ': ';
    return token.replace(/[^\x20-\x7e]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  });
}

function resultText(value) {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  try {
    const text = pythonJson(value);
    if (text !== undefined) return text;
  } catch {
    // Circular structures, BigInt: fall back to String() as Python falls back to str().
  }
  return String(value);
}

function describeError(error) {
  let text;
  if (error instanceof Error || (error !== null && typeof error === 'object' && typeof error.stack === 'string')) {
    text = String(error.stack || error);
  } else {
    text = `Uncaught ${util.inspect(error)}`;
  }
  // Engine and Node-internal frames only say how the engine called Run: keep the user's frames.
  const lines = text.split('\n').filter((line) => {
    if (!/^\s+at /.test(line)) return true;
    return !line.includes(ENGINE_FILE) && !/\(node:|at node:/.test(line);
  });
  return truncate(lines.join('\n'), MAX_ERROR_CHARS);
}

function buildEngine(request, run) {
  const params = new Map(Object.entries(request.params || {}).map(([k, v]) => [k, String(v)]));
  const headers = new Map(
    Object.entries(request.headers || {}).map(([k, v]) => [k, (Array.isArray(v) ? v : [v]).map(String)]),
  );
  const maxLogChars = Number.isInteger(request.max_log_chars) ? request.max_log_chars : 8000;

  // An engine outliving its run (kept by a callback) must not write into the next run.
  const log = (level) => (message) => {
    if (run.finished) return;
    emit({ t: 'log', level, msg: truncate(logText(message), maxLogChars) });
  };

  const engineParams = {
    get: (name) => (params.has(name) ? params.get(name) : null),
    items: () => Array.from(params.entries()),
  };
  const engineHeader = {
    get: (name) => {
      const values = headers.get(name);
      return values && values.length > 0 ? values[0] : '';
    },
    items: () => Array.from(headers.entries(), ([k, v]) => [k, v.slice()]),
  };
  const engineLog = { debug: log('debug'), info: log('info'), error: log('error') };
  const engineResult = {
    // set(value, {status_code, content_type}) or, like Python's positional call, set(value, 404, 'json').
    set(value, options, contentType) {
      let statusCode = 200;
      let type = 'text';
      if (options !== null && typeof options === 'object') {
        if (options.status_code !== undefined) statusCode = options.status_code;
        if (options.content_type !== undefined) type = options.content_type;
      } else {
        if (options !== undefined) statusCode = options;
        if (contentType !== undefined) type = contentType;
      }
      if (!(typeof statusCode === 'string' || Number.isInteger(statusCode))) statusCode = 200;
      if (run.finished) return;
      emit({
        t: 'result',
        value: resultText(value),
        status_code: statusCode,
        content_type: type === null ? 'text' : String(type),
      });
    },
  };
  const body = String(request.body ?? '').replace(PY_STRIP, '');
  const method = String(request.method ?? '');
  const secrets = new Map(Object.entries(request.secrets || {}).map(([k, v]) => [k, String(v)]));
  const engineSecrets = Object.freeze({
    get: (name, defaultValue = null) => (secrets.has(name) ? secrets.get(name) : defaultValue),
    has: (name) => secrets.has(name),
    keys: () => Array.from(secrets.keys()),
  });

  return {
    params: engineParams,
    header: engineHeader,
    body,
    method,
    log: engineLog,
    result: engineResult,
    secrets: engineSecrets,
    request: { params: engineParams, header: engineHeader, body, method, log: engineLog },
  };
}

// Node's own globals (process, Buffer, fetch, URL, ...) that a fresh vm context lacks; the
// language's built-ins (Object, Promise, ...) come new with each context.
const CONTEXT_SKIP = new Set(['global', 'globalThis', 'console', 'setTimeout', 'setInterval', 'setImmediate']);
const NODE_GLOBALS = (() => {
  const own = new Set(vm.runInContext('Object.getOwnPropertyNames(globalThis)', vm.createContext({})));
  const found = [];
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (own.has(name) || CONTEXT_SKIP.has(name)) continue;
    try {
      found.push([name, globalThis[name]]); // reading lazy getters now also warms them
    } catch {
      // A global that cannot be read here is not offered to user code either.
    }
  }
  return found;
})();
const timers = { setTimeout, setInterval, setImmediate, clearTimeout, clearInterval, clearImmediate };
const actionRequire = createRequire(`${process.cwd()}/${ACTION_FILE}`);

// Timers of a run are tracked, so none of them fires after the run ended.
function runTimers(run) {
  const track = (start, clear) => {
    const tracked = (callback, ...rest) => {
      const handle = start((...args) => {
        if (start !== timers.setInterval) run.timers.delete(handle);
        if (!run.finished) return typeof callback === 'function' ? callback(...args) : undefined;
        return undefined;
      }, ...rest);
      run.timers.set(handle, clear);
      return handle;
    };
    // util.promisify(setTimeout) keeps working (a pending one shows in the loop: see settled()).
    if (start[util.promisify.custom]) tracked[util.promisify.custom] = start[util.promisify.custom];
    return tracked;
  };
  return {
    setTimeout: track(timers.setTimeout, timers.clearTimeout),
    setInterval: track(timers.setInterval, timers.clearInterval),
    setImmediate: track(timers.setImmediate, timers.clearImmediate),
  };
}

function newContext(run) {
  const sandbox = {};
  for (const [name, value] of NODE_GLOBALS) sandbox[name] = value;
  Object.assign(sandbox, runTimers(run));
  sandbox.console = new console.Console({ stdout: process.stdout, stderr: process.stderr });
  const context = vm.createContext(sandbox);
  sandbox.global = vm.runInContext('globalThis', context);
  plainToStrings = new Set([
    Object.prototype.toString,
    Array.prototype.toString,
    ...vm.runInContext('[Object.prototype.toString, Array.prototype.toString]', context),
  ]);
  return context;
}

function loadRun(source, context) {
  const module = { exports: {} };
  const compiled = vm.compileFunction(
    // A top-level `function Run` is local to the CommonJS body: hand it back from the body.
    `${source}\n;return typeof Run === 'function' ? Run : undefined;`,
    ['exports', 'require', 'module', '__filename', '__dirname'],
    { filename: ACTION_FILE, parsingContext: context },
  );
  const topLevel = compiled.call(module.exports, module.exports, actionRequire, module, ACTION_FILE, '.');
  if (typeof topLevel === 'function') return topLevel;
  const exported = module.exports && module.exports.Run;
  if (typeof exported === 'function') return exported;
  return undefined;
}

// First calls of these cost milliseconds (lazy compilation inside V8 and Node): pay them at boot.
const warmRun = { finished: false, timers: new Map() };
loadRun('function Run() { return 1; }', newContext(warmRun));
truncate(logText({ warm: [1, 'é'] }), 8);
resultText({ warm: [1, 'é'] });
describeError(new Error('warm'));
// console.log builds the stdout/stderr streams on first use.
void process.stdout;
void process.stderr;

let current = null; // the run in progress

function activeResources() {
  const counts = new Map();
  for (const name of process.getActiveResourcesInfo()) counts.set(name, (counts.get(name) || 0) + 1);
  return counts;
}

// Whether nothing started by the run is left (sockets, files, child processes, timers made
// through the timers module): only then may the next run of this process start.
function settled(run) {
  for (const [name, count] of activeResources()) {
    if (count > (run.before.get(name) || 0)) return false;
  }
  return true;
}

function endRun(run, message) {
  if (run.finished) return;
  run.finished = true;
  if (current === run) current = null;
  for (const [handle, clear] of run.timers) clear(handle);
  run.timers.clear();
  const code = message === null ? 0 : 1;
  if (message !== null) {
    try {
      emit({ t: 'error', kind: 'exception', message });
    } catch {
      // No event channel (fd 3 closed): stderr still reaches the supervisor.
      process.stderr.write(`${message}\n`);
    }
  }
  if (!run.reuse) exit(code);
  const finish = () => {
    if (!settled(run)) exit(code);
    emit({ t: 'done', code });
    listen();
  };
  // The run's output must reach the supervisor before its end does (its limits count it):
  // writes to a full pipe wait in the stream's buffer.
  const afterFlush = () => {
    if (process.stdout.writableLength > 0 || process.stderr.writableLength > 0) {
      timers.setTimeout(afterFlush, 1);
      return;
    }
    // Callbacks queued right now (a resolved fetch, a closing handle) get one turn to show up.
    timers.setImmediate(finish);
  };
  afterFlush();
}

async function execute(run, request) {
  const engine = buildEngine(request, run);
  run.evaluating = true;
  const action = loadRun(String(request.source ?? ''), newContext(run));
  run.evaluating = false;
  if (action === undefined) {
    // A script: it is done when nothing of it is left in the event loop (see beforeExit).
    run.script = true;
    emit({ t: 'script' });
    await new Promise((resolve) => {
      run.scriptEnded = resolve;
    });
    return;
  }
  emit({ t: 'action' });
  await action(engine);
}

function start(request) {
  const run = {
    finished: false,
    timers: new Map(),
    reuse: request.reuse === true,
    before: null,
    evaluating: false,
    script: false,
    scriptEnded: null,
  };
  // What the loop holds before the run (the engine's own handles), plus this check's immediate.
  run.before = activeResources();
  run.before.set('Immediate', (run.before.get('Immediate') || 0) + 1);
  current = run;
  execute(run, request).then(
    () => endRun(run, null),
    (error) => endRun(run, describeError(error)),
  );
}

function fail(error) {
  // Between runs nothing of the user's may still run: such a process is not reusable.
  if (current === null) exit(1);
  endRun(current, describeError(error));
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
// The loop emptied: a script is done (exiting like node with a non-zero process.exitCode), while
// Run's promise still pending can never settle.
process.on('beforeExit', () => {
  if (current === null) return;
  if (!current.script) {
    endRun(current, 'Run returned a promise that never settled');
  } else if (process.exitCode) {
    exit(process.exitCode);
  } else {
    current.scriptEnded();
  }
});
// process.exit() while the source is evaluated: the code gave no Run, so it ran as a script.
process.on('exit', () => {
  if (current !== null && current.evaluating && !current.script) {
    current.script = true;
    emit({ t: 'script' });
  }
});

// Bytes from stdin not consumed yet. A chunk is searched once for a newline and the chunks are
// joined only when a whole line or body is there: a large body costs time linear in its size.
let chunks = [];
let buffered = 0;
let lineSeen = false; // a newline is somewhere in `chunks`
let request = null; // a request line read, waiting for its body
let busy = false; // from a request until its run's end was reported
let ended = false; // stdin reached EOF: no request comes after those already read

function joined() {
  if (chunks.length > 1) chunks = [Buffer.concat(chunks, buffered)];
  return chunks.length ? chunks[0] : Buffer.alloc(0);
}

function keep(rest) {
  chunks = rest.length ? [rest] : [];
  buffered = rest.length;
  lineSeen = rest.indexOf(10) >= 0;
}

function next() {
  if (request === null) {
    if (!lineSeen) {
      if (ended) exit(0); // EOF between runs: the supervisor retired this process
      return;
    }
    const data = joined();
    const newline = data.indexOf(10);
    request = JSON.parse(data.toString('utf8', 0, newline));
    keep(data.subarray(newline + 1));
  }
  const size = Number.isInteger(request.body_size) && request.body_size > 0 ? request.body_size : 0;
  if (buffered < size) {
    if (ended) exit(0);
    return;
  }
  const data = joined();
  const ready = request;
  request = null;
  ready.body = data.toString('utf8', 0, size); // invalid UTF-8 reads as U+FFFD
  keep(data.subarray(size));
  busy = true;
  // While a run is in progress stdin must not keep the loop alive (see beforeExit).
  process.stdin.pause();
  process.stdin.unref?.();
  start(ready);
}

function listen() {
  busy = false;
  process.stdin.ref?.();
  process.stdin.resume();
  next();
}

process.stdin.on('data', (chunk) => {
  chunks.push(chunk);
  buffered += chunk.length;
  if (!lineSeen && chunk.indexOf(10) >= 0) lineSeen = true;
  if (!busy) next();
});
process.stdin.on('end', () => {
  ended = true;
  if (!busy) next();
});

// Booted: a Node that cannot load this file (or crashes on the way here) never says it.
emit({ t: 'ready' });
