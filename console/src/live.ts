// The /web WebSocket: requests answered by req_id, and the events that follow on the same req_id.

import { session } from "./api";

export interface Answer {
  pkg_id: number;
  req_id: string;
  status_code: number;
  msg?: string;
  data: Record<string, unknown> & { event?: string };
  meta?: Record<string, unknown>;
}

type Listener = (answer: Answer) => void;

/** A request refused over the socket: its status code (1 error, 2 invalid, 3 denied, 4 not found). */
export class LiveError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    /** The socket closed (or never opened) before an answer came. */
    readonly closed = false,
  ) {
    super(message);
  }
}

class LiveChannel {
  private socket: WebSocket | null = null;
  private opening: Promise<WebSocket> | null = null;
  private waiting = new Map<string, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();
  private listeners = new Map<string, Listener>();
  private counter = 0;

  private open(): Promise<WebSocket> {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    this.opening ??= new Promise<WebSocket>((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const token = encodeURIComponent(session.token() ?? "");
      const socket = new WebSocket(`${scheme}://${location.host}/web?token=${token}`);
      socket.onopen = () => {
        this.socket = socket;
        this.opening = null;
        resolve(socket);
      };
      socket.onmessage = (message) => this.receive(JSON.parse(String(message.data)) as Answer);
      socket.onclose = (close) => {
        this.opening = null;
        this.socket = null;
        const reason = close.code === 1008 ? close.reason || "The live channel refused the connection." : "The live channel closed.";
        reject(new LiveError(1, reason, true));
        for (const pending of this.waiting.values()) pending.reject(new LiveError(1, reason, true));
        this.waiting.clear();
        // Followers hear that their stream ended; they may follow again.
        for (const [reqId, listener] of this.listeners) {
          listener({ pkg_id: 0, req_id: reqId, status_code: 1, msg: reason, data: { event: "closed" } });
        }
        this.listeners.clear();
      };
    });
    return this.opening;
  }

  private receive(answer: Answer): void {
    const pending = this.waiting.get(answer.req_id);
    if (pending && answer.data?.event === undefined) {
      this.waiting.delete(answer.req_id);
      if (answer.status_code === 0) pending.resolve(answer);
      else pending.reject(new LiveError(answer.status_code, answer.msg ?? "refused"));
      return;
    }
    this.listeners.get(answer.req_id)?.(answer);
  }

  /** Send a package and wait for its answer; `onEvent` hears what follows on the same req_id. */
  async request(pkgId: number, data: Record<string, unknown>, onEvent?: Listener): Promise<Answer> {
    const socket = await this.open();
    this.counter += 1;
    const reqId = `console-${this.counter}`;
    if (onEvent) this.listeners.set(reqId, onEvent);
    const answer = new Promise<Answer>((resolve, reject) => this.waiting.set(reqId, { resolve, reject }));
    socket.send(JSON.stringify({ pkg_id: pkgId, req_id: reqId, data }));
    try {
      return await answer;
    } catch (error) {
      this.listeners.delete(reqId);
      throw error;
    }
  }

  /** Stop hearing a request's events (pkg 10 when the socket is still open). */
  stop(reqId: string): void {
    if (!this.listeners.delete(reqId)) return;
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.request(10, { req_id: reqId }).catch(() => undefined);
    }
  }

  close(): void {
    this.socket?.close();
    this.socket = null;
  }
}

export const live = new LiveChannel();
