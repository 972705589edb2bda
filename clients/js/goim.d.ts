// Types of goim.js (swift-goim's JavaScript client). See docs/sdk-js.md.

export declare const Op: Readonly<{
  HEARTBEAT: 2; HEARTBEAT_REPLY: 3; AUTH: 7; AUTH_REPLY: 8; RAW: 9;
  CHANGE_ROOM: 12; CHANGE_ROOM_REPLY: 13; SUB: 14; SUB_REPLY: 15; UNSUB: 16; UNSUB_REPLY: 17;
  TOKEN_REFRESH: 18; TOKEN_REFRESH_REPLY: 19;
}>;

export interface Packet {
  operation: number;
  version: number;
  /** The offset of a room message with history; minus the offset of a push to the user with history; 0 otherwise
   * (or the echoed seq of a reply). */
  sequence: number;
  body: Uint8Array;
}

export declare function encodePacket(operation: number, sequence: number, body?: Uint8Array | string): ArrayBuffer;
export declare function decodePackets(data: ArrayBuffer): Packet[];
/** Milliseconds in [0, min(max, base * 2^attempt)). */
export declare function backoffDelay(attempt: number, bounds?: { base?: number; max?: number }, random?: () => number): number;

export interface AuthBody {
  mid?: number;
  key?: string;
  room_id?: string;
  platform?: string;
  accepts?: number[];
  /** jwt mode: the token (the comet forwards the whole body to logic). */
  token?: string;
  return_key?: boolean;
  [field: string]: unknown;
}

export interface GoIMClientOptions {
  /** The op 7 body (without `recover`, which the client adds). */
  auth?: AuthBody;
  /** Seconds between heartbeats (30); a heartbeat without a reply by the next one closes and reconnects. */
  heartbeat?: number;
  /** Reconnect delays: random in [0, min(max, base * 2^attempt)) ms; defaults 500 and 15000. */
  backoff?: { base?: number; max?: number };
  /** Ask for offsets and recovery (true). Against goim's comet it changes nothing. */
  recover?: boolean;
  /** Ask for offsets and recovery of the pushes to this client's user (`recover.mid`, offline messages); defaults to
   * `recover`. Needs a `mid` in `auth` and a server with `[history] mids`; otherwise it changes nothing. */
  recoverUser?: boolean;
  /** A WebSocket implementation (the global one by default). */
  WebSocket?: typeof WebSocket;
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'reconnecting' | 'closed';

export interface MessageDetail {
  operation: number;
  body: Uint8Array;
  /** The message's offset in its stream's history; 0 for rooms without history, pushes without history and
   * broadcasts. */
  offset: number;
  /** Which stream `offset` belongs to: the room's, the user's (pushes to its mid), or none. */
  stream: 'room' | 'user' | null;
  room: string;
  text(): string;
  json(): unknown;
}

export interface StateDetail {
  state: ConnectionState;
  reason?: string;
  /** Milliseconds until the next attempt (state `disconnected`). */
  retryIn?: number;
}

export interface StandingDetail {
  key?: string;
  room: string;
  epoch: string;
  offset: number;
  recovering: boolean;
  /** False when the history no longer held everything missed: reload what the page shows. */
  recovered: boolean;
  /** Where the user's stream stands (op 8 only, when `recoverUser` and the server keeps user history). */
  mid?: { epoch: string; offset: number; recovering: boolean; recovered: boolean };
}

export interface GoIMClientEventMap {
  message: CustomEvent<MessageDetail>;
  state: CustomEvent<StateDetail>;
  standing: CustomEvent<StandingDetail>;
  online: CustomEvent<{ count: number }>;
  reply: CustomEvent<{ operation: number; body: Uint8Array }>;
}

export declare class GoIMClient extends EventTarget {
  constructor(urls: string | string[], options?: GoIMClientOptions);
  readonly state: ConnectionState;
  /** The room history's epoch and the last offset delivered (what a reconnect recovers from). */
  readonly epoch: string;
  readonly lastOffset: number;
  /** The same for the user's stream. */
  readonly userEpoch: string;
  readonly userOffset: number;
  readonly room: string;
  connect(): void;
  close(): void;
  send(operation: number, body?: Uint8Array | string): boolean;
  changeRoom(room: string): boolean;
  sub(operations: number[]): boolean;
  unsub(operations: number[]): boolean;
  refreshToken(token: string): boolean;
  addEventListener<K extends keyof GoIMClientEventMap>(
    type: K, listener: (event: GoIMClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
