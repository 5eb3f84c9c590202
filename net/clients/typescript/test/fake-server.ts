/**
 * A fake node on a loopback port for tests: it completes the handshake (or not, as told) and
 * hands every later frame to the test, which answers with whatever bytes it likes — valid
 * frames, malformed ones, nothing, or a closed socket.
 */

import * as net from 'node:net';

import {
  type Command,
  FrameReader,
  type HelloOk,
  Kind,
  type Result,
  Writer,
  beginFrame,
  decodeRequest,
  encodeErrorFrame,
  encodeHelloOk,
  encodeResult,
  finishFrame,
  requestIdAt,
  type ErrorCode,
} from '../src/index.js';

/** A frame the fake received. */
export interface Received {
  kind: number;
  requestId: number;
  payload: Buffer;
}

/** One client connection to the fake. */
export class FakeConnection {
  readonly socket: net.Socket;
  readonly frames: Received[] = [];
  /** The connection's first frame (its HELLO), once it came. */
  hello: Received | null = null;
  helloDone = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
  }

  send(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Answers REQUEST `requestId` with `results`. */
  respond(requestId: number, results: Result[]): void {
    this.send(response(requestId, results));
  }

  error(code: ErrorCode, message: string, requestId = 0): void {
    this.send(errorFrame(code, message, requestId));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The frame of a RESPONSE. */
export function response(requestId: number, results: Result[]): Buffer {
  const writer = new Writer(256);
  const start = beginFrame(writer, Kind.Response, requestId);
  writer.u16(results.length);
  for (const result of results) encodeResult(writer, result);
  finishFrame(writer, start);
  return writer.take();
}

/** The frame of an ERROR. */
export function errorFrame(code: ErrorCode, message: string, requestId = 0): Buffer {
  const writer = new Writer(64);
  const start = beginFrame(writer, Kind.Error, requestId);
  encodeErrorFrame(writer, { code, message });
  finishFrame(writer, start);
  return writer.take();
}

export const DEFAULT_HELLO: HelloOk = {
  role: 'primary',
  epoch: 1,
  shards: 2,
  frameSizeMaxBytes: 1024 * 1024,
  commandsPerFrameMax: 1000,
  inFlightMax: 256,
};

/** The frame of a HELLO_OK. */
export function helloOk(hello: HelloOk = DEFAULT_HELLO): Buffer {
  const writer = new Writer(64);
  const start = beginFrame(writer, Kind.HelloOk, 0);
  encodeHelloOk(writer, hello);
  finishFrame(writer, start);
  return writer.take();
}

export interface FakeOptions {
  /** What to answer a HELLO with (default: HELLO_OK of {@link DEFAULT_HELLO}); `null`: nothing. */
  onHello?: (connection: FakeConnection) => Buffer | null;
  /** Every frame after HELLO. */
  onFrame?: (connection: FakeConnection, frame: Received) => void;
}

export class FakeServer {
  readonly server: net.Server;
  readonly connections: FakeConnection[] = [];
  port = 0;

  private constructor(server: net.Server) {
    this.server = server;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** REQUEST frames received, over every connection. */
  requests(): Received[] {
    return this.connections.flatMap((c) => c.frames.filter((f) => f.kind === Kind.Request));
  }

  static async start(options: FakeOptions = {}): Promise<FakeServer> {
    const fake = new FakeServer(
      net.createServer((socket) => {
        const connection = new FakeConnection(socket);
        fake.connections.push(connection);
        socket.on('error', () => {});
        const reader = new FrameReader(64 * 1024 * 1024, (buf, pos, total) => {
          const frame: Received = {
            kind: buf[pos + 5]!,
            requestId: requestIdAt(buf, pos),
            payload: Buffer.from(buf.subarray(pos + 16, pos + total)),
          };
          if (!connection.helloDone) {
            connection.helloDone = true;
            connection.hello = frame;
            const answer = options.onHello ? options.onHello(connection) : helloOk();
            if (answer) connection.send(answer);
            return;
          }
          connection.frames.push(frame);
          options.onFrame?.(connection, frame);
        });
        socket.on('data', (chunk: Buffer) => {
          try {
            reader.push(chunk, () => !socket.destroyed);
          } catch {
            socket.destroy();
          }
        });
      }),
    );
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    const address = fake.server.address();
    fake.port = typeof address === 'object' && address ? address.port : 0;
    return fake;
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A fake that answers every REQUEST with `answer(command)` for each of its commands. */
export function answering(answer: (command: Command) => Result): FakeOptions {
  return {
    onFrame(connection, frame) {
      if (frame.kind !== Kind.Request) return;
      connection.respond(frame.requestId, decodeRequest(frame.payload).map(answer));
    },
  };
}

/** A hold result for `command` (a hold verb), in state `status`. */
export function holdResult(command: Command, status: 'held' | 'confirmed' = 'held'): Result {
  const items = command.op === 'hold' ? command.items.map((i) => ({ resource: i.resource, quantity: Number(i.quantity) })) : [];
  return {
    kind: 'hold',
    existing: false,
    partition: command.partition,
    id: 'id' in command ? command.id : '',
    status,
    items,
    expiresAtMs: 1_700_000_600_000,
    ref: null,
  };
}
