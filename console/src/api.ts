// The service's public HTTP API, as the console uses it: anything here a client can do too.

const TOKEN_KEY = "codeactions.token";
const REFRESH_KEY = "codeactions.refresh";

export interface Info {
  version: string;
  login: boolean;
  rate_limit: { max_requests: number; window_seconds: number };
  languages: string[];
  code_types: string[];
  max_source_bytes: number;
  default_timeout: number;
}

export interface Project {
  uuid: string;
  name?: string;
  role?: string;
  [key: string]: unknown;
}

export interface RunSummary {
  id: string;
  status: string;
  created_at: string;
  updated_at: string;
}

export interface Code {
  id: string;
  name: string;
  type: string;
  source: string;
  language: string;
  project_uuid: string;
  created_at: string;
  updated_at: string;
  timeout: number;
  last_run?: RunSummary | null;
}

export interface Run {
  id: string;
  code_id: string;
  status: string;
  result: string | null;
  extra: Record<string, unknown> | null;
  params: Record<string, unknown> | null;
  body: string | null;
  headers: Record<string, unknown> | null;
  created_at: string;
  updated_at: string;
}

export interface LogLine {
  id?: string;
  seq?: number;
  run_id: string;
  type: string;
  content: string;
  created_at: string;
}

export interface Secret {
  id: string;
  name: string;
  value: string;
  project_uuid: string;
  created_at: string;
  updated_at: string;
}

export interface Member {
  email: string;
  role: number;
  [key: string]: unknown;
}

export interface StatsBucket {
  start: string;
  completed: number;
  failed: number;
  started: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface Page<T> {
  items: T[];
  total: number;
}

/** A refused request: the status and the service's `{"message"}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const session = {
  token(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token: string, refresh?: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (refresh) sessionStorage.setItem(REFRESH_KEY, refresh);
    else sessionStorage.removeItem(REFRESH_KEY);
  },
  signOut(): void {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(REFRESH_KEY);
  },
};

let onSignedOut: () => void = () => undefined;
/** What to do when the service no longer takes the token (it expired and cannot be refreshed). */
export function whenSignedOut(callback: () => void): void {
  onSignedOut = callback;
}

type Query = Record<string, string | number | boolean | null | undefined>;

function url(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function send(
  method: string,
  path: string,
  options: { query?: Query; body?: BodyInit; json?: unknown; auth?: boolean } = {},
): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = session.token();
  if (token && options.auth !== false) headers.Authorization = `Bearer ${token}`;
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  let response: Response;
  try {
    response = await fetch(url(path, options.query), { method, headers, body });
  } catch {
    throw new ApiError(0, "The service cannot be reached.");
  }
  if (response.status === 401 && options.auth !== false && token) {
    if (await refresh()) return send(method, path, options);
    session.signOut();
    onSignedOut();
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const payload = (await response.json()) as { message?: string; detail?: unknown };
      if (payload.message) message = payload.message;
    } catch {
      /* not JSON: keep the status line */
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

let refreshing: Promise<boolean> | null = null;
/** Trade the stored refresh token for a new access token, once for every caller waiting. */
function refresh(): Promise<boolean> {
  const refreshToken = sessionStorage.getItem(REFRESH_KEY);
  if (!refreshToken) return Promise.resolve(false);
  refreshing ??= (async () => {
    try {
      const response = await fetch("/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
      if (!response.ok) return false;
      const tokens = (await response.json()) as { access_token: string; refresh_token?: string };
      session.signIn(tokens.access_token, tokens.refresh_token ?? refreshToken);
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function json<T>(method: string, path: string, options: Parameters<typeof send>[2] = {}): Promise<T> {
  const response = await send(method, path, options);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

async function paged<T>(path: string, query: Query): Promise<Page<T>> {
  const response = await send("GET", path, { query });
  const items = (await response.json()) as T[];
  const total = Number(response.headers.get("X-Total-Count") ?? items.length);
  return { items, total };
}

export const api = {
  info: () => json<Info>("GET", "/info", { auth: false }),
  /** Checks a token by asking for something every principal may read. */
  whoami: (token: string) =>
    fetch("/codelib", { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.status),
  login: (username: string, password: string) =>
    json<{ access_token: string; refresh_token?: string }>("POST", "/login", {
      json: { username, password },
      auth: false,
    }),

  projects: (query: { search?: string; page: number; page_size: number }) =>
    paged<Project>("/projects", query),
  project: (uuid: string) => json<Project>("GET", `/projects/${encodeURIComponent(uuid)}`),
  members: (uuid: string) => json<Member[]>("GET", `/projects/${encodeURIComponent(uuid)}/permissions`),

  codes: (query: { project_uuid: string; search?: string; page: number; page_size: number }) =>
    paged<Code>("/code", { ...query, last_run: true }),
  code: (id: string) => json<Code>("GET", `/code/${encodeURIComponent(id)}`),
  createCode: (query: { project_uuid: string; name: string; language: string; type: string; timeout: number }, source: string) =>
    json<Code>("POST", "/code", { query, body: source }),
  updateCode: (id: string, query: { name: string; language: string; type: string; timeout: number }, source: string) =>
    json<Code>("PATCH", `/code/${encodeURIComponent(id)}`, { query, body: source }),
  deleteCode: (id: string) => send("DELETE", `/code/${encodeURIComponent(id)}`),

  /** Runs the saved code over HTTP and waits for its outcome (no live lines). */
  runCode: (id: string, request: { params: Record<string, string>; body: string; headers: Record<string, string[]>; method: string }) =>
    json<{ code_id: string; result: Run }>("POST", `/run/${encodeURIComponent(id)}`, { json: request }),
  runs: (query: { code_id: string; status?: string; after?: string; before?: string; page: number; page_size: number }) =>
    paged<Run>("/coderun", query),
  run: (id: string) => json<Run>("GET", `/coderun/${encodeURIComponent(id)}`),
  logs: (runId: string) =>
    json<{ data: LogLine[] | null; total: number; page: number; last_page: number }>("GET", "/codelog", {
      query: { run_id: runId },
    }),
  stats: (query: { code_id: string; after: string; before: string; bucket: string }) =>
    json<{ bucket_seconds: number; buckets: StatsBucket[] }>("GET", "/coderun/stats", { query }),

  secrets: (projectUuid: string) => json<Secret[]>("GET", "/secret", { query: { project_uuid: projectUuid } }),
  createSecret: (projectUuid: string, name: string, value: string) =>
    json<Secret>("POST", "/secret", { json: { name, value, project_uuid: projectUuid } }),
  replaceSecret: (id: string, value: string) =>
    json<Secret>("PATCH", `/secret/${encodeURIComponent(id)}`, { json: { value } }),
  deleteSecret: (id: string) => send("DELETE", `/secret/${encodeURIComponent(id)}`),
};
