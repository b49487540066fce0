// JavaScript engine of Code Actions: boots ahead of demand, reads one run request, runs the user's Run(engine).
//
// Protocol (spoken by the runner supervisor):
//   stdin  <- one JSON line {run_id, code_id, source, params, body, headers, method, max_log_chars}
//   fd 3   -> JSON lines {"t":"log",...} | {"t":"result",...} | {"t":"error","kind":"exception",...}
//   stdout/stderr are left alone: the supervisor keeps them as info/error logs.
//   Exit 0 after Run settles, 1 after an error.
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

function logText(message) {
  if (message === undefined) return '';
  if (typeof message === 'string') return message;
  if (message !== null && typeof message === 'object') {
    // String() of a plain object or array says nothing useful ("[object Object]", "1,2"); show it.
    const own = message.toString;
    if (own === Object.prototype.toString || own === Array.prototype.toString || own === undefined) {
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

let finished = false;

function fail(error) {
  failWith(describeError(error));
}

function failWith(message) {
  if (finished) return;
  finished = true;
  try {
    emit({ t: 'error', kind: 'exception', message });
  } catch {
    // No event channel (fd 3 closed): stderr still reaches the supervisor.
    process.stderr.write(`${message}\n`);
  }
  exit(1);
}

function buildEngine(request) {
  const params = new Map(Object.entries(request.params || {}).map(([k, v]) => [k, String(v)]));
  const headers = new Map(
    Object.entries(request.headers || {}).map(([k, v]) => [k, (Array.isArray(v) ? v : [v]).map(String)]),
  );
  const maxLogChars = Number.isInteger(request.max_log_chars) ? request.max_log_chars : 8000;

  const log = (level) => (message) => {
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

  return {
    params: engineParams,
    header: engineHeader,
    body,
    method,
    log: engineLog,
    result: engineResult,
    request: { params: engineParams, header: engineHeader, body, method, log: engineLog },
  };
}

function loadRun(source) {
  const module = { exports: {} };
  const compiled = vm.compileFunction(
    // A top-level `function Run` is local to the CommonJS body: hand it back from the body.
    `${source}\n;return typeof Run === 'function' ? Run : undefined;`,
    ['exports', 'require', 'module', '__filename', '__dirname'],
    { filename: ACTION_FILE },
  );
  const actionRequire = createRequire(`${process.cwd()}/${ACTION_FILE}`);
  const topLevel = compiled.call(module.exports, module.exports, actionRequire, module, ACTION_FILE, '.');
  if (typeof topLevel === 'function') return topLevel;
  const exported = module.exports && module.exports.Run;
  if (typeof exported === 'function') return exported;
  return undefined;
}

// First calls of these cost milliseconds (lazy compilation inside V8 and Node): pay them at boot.
vm.compileFunction('return 1;', ['exports'], { filename: ACTION_FILE })();
truncate(logText({ warm: [1, 'é'] }), 8);
resultText({ warm: [1, 'é'] });
describeError(new Error('warm'));
// console.log builds the stdout/stderr streams on first use.
void process.stdout;
void process.stderr;

async function execute(line) {
  const request = JSON.parse(line);
  const engine = buildEngine(request);
  const run = loadRun(String(request.source ?? ''));
  if (run === undefined) {
    failWith('the code must define a function Run(engine)');
    return;
  }
  await run(engine);
  finished = true;
  exit(0);
}

let started = false;
let input = '';

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
// The loop emptied while Run's promise was still pending: it can never settle.
process.on('beforeExit', () => {
  if (started && !finished) failWith('Run returned a promise that never settled');
});

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  const newline = chunk.indexOf('\n');
  if (newline >= 0) {
    begin(input + chunk.slice(0, newline));
  } else {
    input += chunk;
  }
});
process.stdin.on('end', () => begin(input));

function begin(line) {
  if (started) return;
  started = true;
  process.stdin.removeAllListeners('data');
  process.stdin.destroy();
  // EOF with nothing read: the supervisor retired this spare before giving it a run.
  if (line.trim() === '') exit(0);
  execute(line).catch(fail);
}
