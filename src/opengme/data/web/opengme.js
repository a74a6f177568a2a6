// OpenGME browser SDK (GME H5's shape): one room client over the server's signalling WebSocket, with
// voice over the same socket (docs/protocol.md "Media", the WebSocket path): getUserMedia + an
// AudioWorklet capture 20 ms frames, WebCodecs encodes Opus, WebCrypto seals each packet with
// AES-256-GCM under the member's session key; received packets are opened, decoded per speaker and
// mixed by a playback AudioWorklet with a jitter buffer per speaker.
//
//   import { OpenGME } from "/sdk/opengme.js";
//   const gme = new OpenGME(); gme.init(appId, openId); gme.setTMGDelegate((type, data) => …);
//   gme.enterRoom(roomId, RoomType.FLUENCY, authBuffer);  // then enableMic(true) / enableSpeaker(true)
//
// Events reach the delegate as (EventType number, data) with GME's keys: ENTER_ROOM / EXIT_ROOM /
// ROOM_DISCONNECT {result, error_info}, USER_UPDATE {event_id, user_list}, USER_VOLUMES {openid: level},
// RECONNECT_START / RECONNECT_SUCCESS {result, error_info}.
// Calls return GME error codes. Every number comes from /sdk/gme-constants.js (the server's registries).
//
// A dropped socket is not the end of the room (docs/protocol.md "Reconnect", as the Python SDK and GME):
// RECONNECT_START, then attempts with the room's resume token and backoff, over the node it was on, the
// entry URL and the cluster's live nodes in turn, until RECONNECT_SUCCESS (mic and speaker as they were)
// or ROOM_DISCONNECT (a `disconnect`, a refused resume, or `reconnectGiveUp` seconds without success).

import { ErrorCode, EventType, Media, PROFILES, PROTOCOL_VERSION, RoomType, SIGNAL_PATH, UserUpdateEvent }
  from "./gme-constants.js";

export { ErrorCode, EventType, RoomType, UserUpdateEvent };

const SDK_VERSION = "opengme-js/1.0";
const RATE = 48000; // the AudioContext's rate: capture and playback
const FRAME = RATE * Media.FRAME_MS / 1000;
const VOLUMES_INTERVAL_MS = 200;
const MAX_REDIRECTS = 3; // a cluster sends an entry on to the room's node: at most this many hops (as the Python SDK)
const BACKOFF_FIRST_MS = 200; // reconnect backoff: 0.2 s doubling to 5 s, ±50 % jitter (docs/protocol.md)
const BACKOFF_MAX_MS = 5000;
const RECONNECT_GIVE_UP_S = 3600; // GME gives up reconnecting after 60 min
const ATTEMPT_TIMEOUT_MS = 30000; // one reconnect attempt (hello + enter) unanswered this long has failed
const LIVENESS_FACTOR = 3; // a socket silent for this many heartbeat intervals is dead (as the Python SDK)
const SPEAKING_TIMEOUT_MS = 2000; // NO_AUDIO after this long without a loud packet (the native detector's)
const WINDOW = 1024; // anti-replay window, packets
const START_MS = 60; // jitter buffer: playout starts with this much queued
const MAX_MS = 200; // … and never lets more than this pile up

const enc = new TextEncoder();
const latin1 = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function b64decode(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function failure(message, code, fromServer = false) {
  return Object.assign(new Error(message), { code, fromServer });
}

/** When and where a reconnect tries next, and when it gives up: pure (the caller passes the times),
 * the same rules as the Python SDK's session. */
export class ReconnectPlan {
  /** `urls`: the node the room was on, the entry URL, then the cluster's live nodes (duplicates and
   * non-URLs dropped, the order kept); `giveUpMs` from `now` (ms) on, no more attempts. */
  constructor(urls, now, giveUpMs, random = Math.random) {
    const unique = new Set();
    for (const url of urls) {
      try { unique.add(String(new URL(url))); } catch { /* not a URL: a server's field we cannot use */ }
    }
    this.urls = [...unique];
    this.next = 0;
    this.attempt = 0;
    this.giveUpAt = now + giveUpMs;
    this.random = random;
  }

  /** The wait before the next attempt (ms): none within a round over the known nodes (a dead node
   * refuses in a moment, and the room may already be elsewhere); between rounds 0.2 s doubling to
   * 5 s, jittered ±50 % so that the members of a room that lost its node do not all come back in step. */
  delay() {
    if (this.next % this.urls.length !== 0) return 0;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt++);
    return base * (0.5 + this.random());
  }

  /** The server of the next attempt, in turn. */
  url() {
    return this.urls[this.next++ % this.urls.length];
  }

  expired(now) {
    return now >= this.giveUpAt;
  }
}

/** RFC 6464 level (0 loudest … 127 silence, in -dBov) of float samples in -1…1. */
export function audioLevel(samples) {
  let sum = 0;
  for (const x of samples) sum += x * x;
  const mean = sum / Math.max(1, samples.length);
  if (mean <= Math.pow(10, -Media.SILENCE_DBOV / 10)) return Media.SILENCE_DBOV;
  return Math.min(Media.SILENCE_DBOV, Math.max(0, Math.round(-10 * Math.log10(mean))));
}

/** GME's 0…100 meter from an RFC 6464 level (linear over the top METER_RANGE_DB dB). */
export function meterLevel(dbov) {
  return Math.round(100 * Math.max(0, Media.METER_RANGE_DB - dbov) / Media.METER_RANGE_DB);
}

function nonce(direction, idBytes, index) {
  const n = new Uint8Array(12);
  n[0] = direction;
  n.set(idBytes, 2);
  const view = new DataView(n.buffer);
  view.setUint16(6, Math.floor(index / 2 ** 32));
  view.setUint32(8, index % 2 ** 32);
  return n;
}

/** One member's media session: the key, the send counter and the receive window. */
class MediaCrypto {
  static async create(keyBytes) {
    const c = new MediaCrypto();
    c.key = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256",
      new Uint8Array([...latin1(Media.SESSION_ID_LABEL), ...keyBytes])));
    c.sessionId = new DataView(digest.buffer).getUint32(0);
    c.sendIndex = 0;
    c.top = -1;
    c.seen = new Set();
    return c;
  }

  async seal(h, payload) {
    const index = this.sendIndex++;
    const header = new Uint8Array(Media.HEADER_SIZE);
    const v = new DataView(header.buffer);
    v.setUint8(0, (Media.VERSION << 6) | h.type); // direction 0: client to server
    v.setUint8(1, h.flags || 0);
    v.setUint16(2, h.seq || 0);
    v.setUint32(4, h.timestamp || 0);
    v.setUint32(8, this.sessionId);
    v.setUint8(12, (h.voice ? 0x80 : 0) | (h.level ?? Media.SILENCE_DBOV));
    v.setUint8(13, (h.roomType << 4) | Media.OPUS);
    v.setUint16(14, index & 0xffff);
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce(0, header.subarray(8, 12), index), additionalData: header, tagLength: 128 },
      this.key, payload);
    const out = new Uint8Array(header.length + sealed.byteLength);
    out.set(header);
    out.set(new Uint8Array(sealed), header.length);
    return out;
  }

  /** {type, flags, seq, timestamp, id, level, voice, payload} of an authentic, fresh downlink datagram, else null. */
  async open(datagram) {
    const d = new Uint8Array(datagram);
    if (d.length < Media.HEADER_SIZE + Media.TAG_SIZE || d.length > Media.MAX_DATAGRAM) return null;
    if ((d[0] >> 6) !== Media.VERSION || !(d[0] & Media.DIRECTION_BIT)) return null;
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const counter = v.getUint16(14);
    let index = counter;
    if (this.top >= 0) {
      const delta = (counter - this.top) & 0xffff;
      index = delta >= 0x8000 ? this.top + delta - 0x10000 : this.top + delta;
    }
    if (index < 0 || index <= this.top - WINDOW || this.seen.has(index)) return null;
    let payload;
    try {
      payload = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce(1, d.subarray(8, 12), index), additionalData: d.subarray(0, Media.HEADER_SIZE),
          tagLength: 128 }, this.key, d.subarray(Media.HEADER_SIZE)));
    } catch {
      return null;
    }
    this.seen.add(index);
    if (index > this.top) this.top = index;
    if (this.seen.size > 2 * WINDOW) for (const i of this.seen) if (i <= this.top - WINDOW) this.seen.delete(i);
    return { type: d[0] & 0x1f, flags: d[1], seq: v.getUint16(2), timestamp: v.getUint32(4), id: v.getUint32(8),
      level: d[12] & 0x7f, voice: !!(d[12] & 0x80), payload };
  }
}

export class OpenGME {
  constructor() {
    this.delegate = () => {};
    this.appId = null;
    this.openId = null;
    this.server = null;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, ws}
    this.entering = false;
    this.room = null; // {roomId, roomType, tinyid, muted, resumeToken}
    this.reconnecting = false;
    this.reconnectGiveUp = RECONNECT_GIVE_UP_S; // seconds: then ROOM_DISCONNECT (GME: 60 min)
    this.generation = 0; // counts rooms left: a reconnect of an older one stops
    this.nodeUrl = null; // the server that admitted this member (a cluster's node)
    this.nodeUrls = []; // a cluster's live nodes (hello_ok.nodes)
    this.lastRx = 0; // when the room's socket last brought anything (ms, performance.now)
    this.members = new Map(); // tinyid -> openid
    this.blacklist = new Set(); // openids
    this.memberVolumes = new Map(); // openid -> percent
    this.micVolume = 100;
    this.speakerVolume = 100;
    this.micOn = false;
    this.speakerOn = false;
    this.micLevel = 0;
    this.levels = new Map(); // tinyid -> {meter, lastVoice}
    this.audio = null; // {context, playback, capture, stream, encoder}
    this.decoders = new Map();
    this.recorded = null;
  }

  // --- GME's calls -------------------------------------------------------------------------------

  /** Init(appId, openId): `server` is the OpenGME base URL (default: the page's own). */
  init(appId, openId, server = location.origin) {
    if (typeof appId !== "string" || !appId || typeof openId !== "string" || !openId) {
      return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    }
    if (this.appId !== null) return ErrorCode.AV_ERR_HAS_IN_THE_STATE;
    this.appId = appId;
    this.openId = openId;
    this.server = new URL(server);
    return ErrorCode.AV_OK;
  }

  uninit() {
    if (this.room) this.exitRoom();
    this.appId = this.openId = null;
    return ErrorCode.AV_OK;
  }

  setTMGDelegate(delegate) {
    if (typeof delegate !== "function") return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    this.delegate = delegate;
    return ErrorCode.AV_OK;
  }

  /** EnterRoom: `authBuffer` is base64 text (as a sign server returns it) or bytes. ENTER_ROOM tells the outcome. */
  enterRoom(roomId, roomType, authBuffer) {
    if (this.appId === null) return ErrorCode.AV_ERR_CONTEXT_NOT_EXIST;
    if (typeof roomId !== "string" || !roomId || !Object.values(RoomType).includes(roomType) || !authBuffer) {
      return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    }
    if (this.room || this.entering) return ErrorCode.AV_ERR_HAS_IN_THE_STATE;
    this.entering = true;
    this._audioContext(); // created inside the caller's click, so the browser lets it play
    const auth = typeof authBuffer === "string" ? authBuffer : b64encode(authBuffer);
    this._join(roomId, roomType, { auth_buffer: auth }, this.server)
      .then((joined) => this._admitted(joined, roomId, false))
      .catch((err) => {
        this.entering = false;
        this._closeSocket();
        const code = err.code ?? ErrorCode.AV_ERR_NET_REQUEST_FALLED;
        this._emit(EventType.ENTER_ROOM, { result: code, error_info: err.message || String(err) });
      });
    return ErrorCode.AV_OK;
  }

  /** ExitRoom; during a reconnect it stops the attempts (nothing to tell a server it is not on). */
  exitRoom() {
    if (!this.room) return ErrorCode.AV_ERR_ROOM_NOT_EXIST;
    const ws = this.ws;
    if (this.reconnecting) this._closeSocket();
    else this._request({ type: "exit" }).catch(() => {}).finally(() => ws && ws.close());
    this._leave();
    this._emit(EventType.EXIT_ROOM, { result: ErrorCode.AV_OK, error_info: "" });
    return ErrorCode.AV_OK;
  }

  isRoomEntered() {
    return !!this.room;
  }

  getRoomMembers() {
    return this.room ? [this.openId, ...this.members.values()] : [];
  }

  enableMic(on) {
    if (!this.room) return ErrorCode.AV_ERR_ROOM_NOT_EXIST;
    if (on && this.room.muted) return ErrorCode.AV_ERR_NO_PERMISSION;
    this.micOn = !!on;
    if (on) this._startCapture().catch((err) => { this.micOn = false; console.error("OpenGME mic:", err); });
    else this._stopCapture(); // the browser's microphone indicator goes off too
    return ErrorCode.AV_OK;
  }

  enableSpeaker(on) {
    if (!this.room) return ErrorCode.AV_ERR_ROOM_NOT_EXIST;
    this.speakerOn = !!on;
    this._post({ type: "speaker", gain: this.speakerOn ? this.speakerVolume / 100 : 0 });
    if (this.audio) this.audio.context.resume();
    return ErrorCode.AV_OK;
  }

  getMicState() { return this.micOn ? 1 : 0; }

  getSpeakerState() { return this.speakerOn ? 1 : 0; }

  setMicVolume(percent) {
    if (!Number.isInteger(percent) || percent < 0 || percent > 200) return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    this.micVolume = percent;
    return ErrorCode.AV_OK;
  }

  setSpeakerVolume(percent) {
    if (!Number.isInteger(percent) || percent < 0 || percent > 200) return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    this.speakerVolume = percent;
    if (this.speakerOn) this._post({ type: "speaker", gain: percent / 100 });
    return ErrorCode.AV_OK;
  }

  /** SetSpeakerVolumeByOpenID: one member's volume on this device (0–200 %). */
  setSpeakerVolumeByOpenID(openId, percent) {
    if (typeof openId !== "string" || !Number.isInteger(percent) || percent < 0 || percent > 200) {
      return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    }
    this.memberVolumes.set(openId, percent);
    const tinyid = this._tinyidOf(openId);
    if (tinyid !== null) this._post({ type: "volume", id: tinyid, gain: percent / 100 });
    return ErrorCode.AV_OK;
  }

  getSpeakerVolumeByOpenID(openId) {
    return this.memberVolumes.get(openId) ?? 100;
  }

  /** AddAudioBlackList: stop playing one member here (their levels still update). */
  addAudioBlackList(openId) {
    if (typeof openId !== "string" || !openId) return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    if (this.blacklist.has(openId)) return ErrorCode.AV_ERR_HAS_IN_THE_STATE;
    this.blacklist.add(openId);
    const tinyid = this._tinyidOf(openId);
    if (tinyid !== null) this._post({ type: "remove", id: tinyid });
    return ErrorCode.AV_OK;
  }

  removeAudioBlackList(openId) {
    if (!this.blacklist.delete(openId)) return ErrorCode.AV_ERR_INVALID_ARGUMENT;
    return ErrorCode.AV_OK;
  }

  /** GetMicLevel (0–100) of the last captured frame. */
  getMicLevel() { return this.micOn ? this.micLevel : 0; }

  /** GetRecvStreamLevel (0–100) of a member, from its packets' audio level. */
  getRecvStreamLevel(openId) {
    const tinyid = this._tinyidOf(openId);
    const level = tinyid === null ? null : this.levels.get(tinyid);
    return level && performance.now() - level.at < 500 ? level.meter : 0;
  }

  /** Start (or stop) keeping what the speaker plays; `takeRecording` returns it as 48 kHz floats. */
  recordPlayback(on) {
    this.recorded = on ? [] : null;
    this._post({ type: "record", on: !!on });
  }

  takeRecording() {
    const parts = this.recorded || [];
    this.recorded = this.recorded && [];
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  // --- signalling --------------------------------------------------------------------------------

  /** A signalling socket to `server`, hello said: resolves with `hello_ok` (its `nodes` kept). */
  async _connect(server) {
    const url = new URL(SIGNAL_PATH, server);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = this.ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = ws.onclose = () => reject(failure(`cannot reach ${url}`, ErrorCode.AV_ERR_NET_REQUEST_FALLED));
    });
    ws.onmessage = (event) => {
      if (ws === this.ws) this.lastRx = performance.now();
      this._onFrame(event.data);
    };
    ws.onclose = () => this._onClose(ws);
    const hello = await this._request({ type: "hello", protocol: PROTOCOL_VERSION, sdk_version: SDK_VERSION,
      app_id: this.appId, open_id: this.openId, abilities: ["audio"] });
    if (Array.isArray(hello.nodes)) this.nodeUrls = hello.nodes.filter((u) => typeof u === "string");
    return hello;
  }

  /** hello + enter at `server` with `credentials` (an AuthBuffer, or a resume token), following a
   * cluster's `redirect` to the room's node: resolves with {hello, entered, server}. */
  async _join(roomId, roomType, credentials, server, hops = 0) {
    const hello = await this._connect(server);
    const entered = await this._request({ type: "enter", room_id: roomId, room_type: roomType, ...credentials });
    if (entered.type === "redirect") { // a cluster: the room lives on another node (docs/protocol.md)
      this._closeSocket();
      if (hops >= MAX_REDIRECTS || typeof entered.url !== "string") {
        throw failure(`more than ${MAX_REDIRECTS} redirects in a row: the cluster's nodes disagree on where room `
          + `${roomId} is`, ErrorCode.AV_ERR_SERVER_FAILED);
      }
      return this._join(roomId, roomType, credentials, entered.url, hops + 1);
    }
    return { hello, entered, server };
  }

  /** In the room (`resumed`: by a reconnect): members, heartbeats, ENTER_ROOM or RECONNECT_SUCCESS
   * and the members that came or went meanwhile, then media with the new key. */
  async _admitted({ hello, entered, server }, roomId, resumed) {
    const ws = this.ws, generation = this.generation;
    this.nodeUrl = server;
    this.room = { roomId, roomType: entered.room_type, tinyid: entered.tinyid, muted: entered.muted,
      resumeToken: entered.resume_token };
    this.entering = this.reconnecting = false;
    const old = this.members;
    this.members = new Map(entered.members.map((m) => [m.tinyid, m.open_id]));
    for (const [tinyid, openId] of old) if (this.members.get(tinyid) !== openId) this._forget(tinyid);
    if (this.room.muted && this.micOn) { this.micOn = false; this._stopCapture(); } // muted meanwhile
    if (resumed && this.uplink) this.uplink.talking = false; // the capture goes on: the next packet starts a talkspurt
    else this.uplink = { seq: 0, timestamp: 0, levels: [], talking: false, chain: Promise.resolve() };
    this._heartbeats(ws, hello.heartbeat_interval * 1000);
    if (resumed) {
      this._emit(EventType.RECONNECT_SUCCESS, { result: ErrorCode.AV_OK, error_info: "" });
      const was = new Set(old.values()), now = new Set(this.members.values());
      const gone = [...was].filter((o) => !now.has(o)), came = [...now].filter((o) => !was.has(o));
      if (gone.length) this._emit(EventType.USER_UPDATE, { event_id: UserUpdateEvent.EXIT, user_list: gone });
      if (came.length) this._emit(EventType.USER_UPDATE, { event_id: UserUpdateEvent.ENTER, user_list: came });
    } else {
      this.volumesTimer = setInterval(() => this._tickVolumes(), VOLUMES_INTERVAL_MS);
      this._emit(EventType.ENTER_ROOM, { result: ErrorCode.AV_OK, error_info: "" });
      if (this.members.size) this._emit(EventType.USER_UPDATE, { event_id: UserUpdateEvent.ENTER, user_list: [...this.members.values()] });
    }
    const crypto = await MediaCrypto.create(b64decode(entered.media.key));
    // Left, or lost again, while the key was imported: the next admission sets the media up.
    if (generation !== this.generation || ws !== this.ws || this.reconnecting) return;
    this.crypto = crypto;
    this._sendMedia({ type: Media.BIND }, latin1(Media.BIND_MAGIC));
  }

  /** `ping` every interval on `ws`; a socket that brought nothing for LIVENESS_FACTOR intervals is
   * lost (a dead node or path may never close it). */
  _heartbeats(ws, intervalMs) {
    clearInterval(this.heartbeat);
    this.lastRx = performance.now();
    if (!(intervalMs > 0)) return;
    this.heartbeat = setInterval(() => {
      const silent = performance.now() - this.lastRx;
      if (ws !== this.ws) clearInterval(this.heartbeat);
      else if (silent > LIVENESS_FACTOR * intervalMs) this._lost(`nothing heard for ${(silent / 1000).toFixed(1)} s`);
      else this._request({ type: "ping", t: Date.now() / 1000 }).catch(() => {});
    }, intervalMs);
  }

  /** The room's socket is gone without a `disconnect`: RECONNECT_START and the attempts begin. */
  _lost(reason) {
    clearInterval(this.heartbeat);
    this._closeSocket();
    this.crypto = null;
    this.reconnecting = true;
    this._emit(EventType.RECONNECT_START, { result: ErrorCode.AV_OK, error_info: reason });
    this._reconnect(this.generation).catch((err) => console.error("OpenGME reconnect:", err));
  }

  /** Resume the room with its token until admitted, refused (ROOM_DISCONNECT with the server's code),
   * given up (ROOM_DISCONNECT 1005) or left (a newer generation). */
  async _reconnect(generation) {
    const room = this.room;
    const plan = new ReconnectPlan([this.nodeUrl, this.server, ...this.nodeUrls], performance.now(),
      this.reconnectGiveUp * 1000);
    for (;;) {
      await sleep(plan.delay());
      if (generation !== this.generation) return;
      if (plan.expired(performance.now())) {
        this._disconnected(ErrorCode.AV_ERR_TIMEOUT, `reconnecting gave up after ${this.reconnectGiveUp} s`);
        return;
      }
      const timer = setTimeout(() => this._closeSocket(), ATTEMPT_TIMEOUT_MS);
      let joined;
      try {
        joined = await this._join(room.roomId, room.roomType, { auth_buffer: "", resume_token: room.resumeToken },
          plan.url());
      } catch (err) {
        if (generation !== this.generation) return;
        this._closeSocket();
        if (!err.fromServer) continue; // unreachable, closed, unanswered, too many redirects: the next attempt
        this._disconnected(err.code, err.message); // refused for good: token expired, removed (10003), app off …
        return;
      } finally {
        clearTimeout(timer); // before the admission: the timer must never close the room's new socket
      }
      await this._admitted(joined, room.roomId, true);
      return;
    }
  }

  _request(message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(failure("not connected", ErrorCode.AV_ERR_NET_REQUEST_FALLED));
        return;
      }
      this.pending.set(id, { resolve, reject, ws: this.ws });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  _onFrame(data) {
    if (typeof data !== "string") {
      this._onDatagram(data);
      return;
    }
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (typeof m !== "object" || m === null) return;
    const waiting = typeof m.id === "number" ? this.pending.get(m.id) : undefined;
    if (waiting) {
      this.pending.delete(m.id);
      if (m.type === "error") waiting.reject(failure(m.message, m.code, true));
      else waiting.resolve(m);
      return;
    }
    if (m.type === "members" && this.room && Array.isArray(m.members)) {
      const ids = [];
      for (const member of m.members) {
        if (m.event === "enter") this.members.set(member.tinyid, member.open_id);
        else { this.members.delete(member.tinyid); this._forget(member.tinyid); }
        ids.push(member.open_id);
      }
      const event = m.event === "enter" ? UserUpdateEvent.ENTER : UserUpdateEvent.EXIT;
      this._emit(EventType.USER_UPDATE, { event_id: event, user_list: ids });
    } else if (m.type === "disconnect") {
      this._disconnected(m.code, m.reason);
    } else if (m.type === "mute" && this.room) {
      this.room.muted = !!m.muted;
      if (m.muted) { this.micOn = false; this._stopCapture(); }
    } else if (m.type === "room_type" && this.room) {
      this.room.roomType = m.room_type;
    }
  }

  _disconnected(code, reason) {
    if (!this.room) return;
    this._leave();
    this._closeSocket();
    this._emit(EventType.ROOM_DISCONNECT, { result: code, error_info: reason || "" });
  }

  /** A socket closed: its unanswered requests fail; the room's own socket starts a reconnect. */
  _onClose(ws) {
    for (const [id, waiting] of this.pending) {
      if (waiting.ws !== ws) continue;
      this.pending.delete(id);
      waiting.reject(failure("connection closed", ErrorCode.AV_ERR_NET_REQUEST_FALLED));
    }
    if (ws === this.ws && this.room && !this.reconnecting) this._lost("connection to the server lost");
  }

  _leave() {
    this.generation++;
    this.reconnecting = false;
    this.crypto = null;
    clearInterval(this.heartbeat);
    clearInterval(this.volumesTimer);
    for (const tinyid of this.members.keys()) this._forget(tinyid);
    this.room = null;
    this.members = new Map();
    this.micOn = false;
    this.micLevel = 0;
    this._stopCapture();
  }

  _closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onmessage = null; // nothing more from it counts (a lost socket may still deliver while it closes)
    ws.close();
    this._onClose(ws); // its requests fail now, not when the close handshake ends
  }

  _emit(type, data) {
    try { this.delegate(type, data); } catch (err) { console.error("OpenGME delegate:", err); }
  }

  _tinyidOf(openId) {
    for (const [tinyid, id] of this.members) if (id === openId) return tinyid;
    return null;
  }

  _forget(tinyid) {
    const decoder = this.decoders.get(tinyid);
    if (decoder && decoder.state !== "closed") decoder.close();
    this.decoders.delete(tinyid);
    this.levels.delete(tinyid);
    this._post({ type: "remove", id: tinyid });
  }

  // --- media -------------------------------------------------------------------------------------

  _audioContext() {
    if (this.audio) return this.audio;
    const context = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    const ready = Promise.all([
      context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url)),
      context.audioWorklet.addModule(new URL("./playback-worklet.js", import.meta.url)),
    ]).then(() => {
      const playback = new AudioWorkletNode(context, "opengme-playback", { outputChannelCount: [1],
        processorOptions: { startSamples: RATE * START_MS / 1000, maxSamples: RATE * MAX_MS / 1000 } });
      playback.connect(context.destination);
      playback.port.onmessage = (event) => { if (this.recorded) this.recorded.push(event.data); };
      this.audio.playback = playback;
      playback.port.postMessage({ type: "speaker", gain: this.speakerOn ? this.speakerVolume / 100 : 0 });
      return playback;
    });
    this.audio = { context, ready, playback: null, capture: null, stream: null, encoder: null };
    return this.audio;
  }

  _post(message) {
    if (this.audio) this.audio.ready.then((playback) => playback.port.postMessage(message));
  }

  async _startCapture() {
    const audio = this._audioContext();
    await audio.ready;
    if (audio.capture || !this.micOn) return;
    audio.context.resume();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true,
      noiseSuppression: true, autoGainControl: true } });
    if (!this.micOn || audio.capture) { // turned off (or on twice) while the browser asked for the device
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    const source = audio.context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(audio.context, "opengme-capture", { processorOptions: { frameSamples: FRAME } });
    source.connect(capture);
    capture.connect(audio.context.destination); // pulls the graph; the node itself outputs silence
    const encoder = new AudioEncoder({
      output: (chunk) => this._encoded(chunk),
      error: (err) => console.error("OpenGME encoder:", err),
    });
    encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 32000,
      opus: { frameDuration: Media.FRAME_MS * 1000, useinbandfec: true, packetlossperc: 5 } });
    capture.port.onmessage = (event) => this._captured(event.data);
    Object.assign(audio, { capture, stream, encoder, source, frames: 0 });
  }

  _stopCapture() {
    const audio = this.audio;
    if (!audio || !audio.capture) return;
    audio.capture.port.onmessage = null;
    audio.source.disconnect();
    audio.capture.disconnect();
    for (const track of audio.stream.getTracks()) track.stop();
    if (audio.encoder.state !== "closed") audio.encoder.close();
    audio.capture = audio.stream = audio.encoder = audio.source = null;
    if (this.uplink) { this.uplink.talking = false; this.uplink.levels = []; } // the next packet starts a talkspurt
  }

  _captured(frame) {
    if (!this.room || !this.micOn) return;
    if (this.micVolume !== 100) for (let i = 0; i < frame.length; i++) frame[i] *= this.micVolume / 100;
    const level = audioLevel(frame);
    this.micLevel = meterLevel(level);
    this.uplink.levels.push(level);
    const audio = this.audio;
    audio.encoder.encode(new AudioData({ format: "f32-planar", sampleRate: RATE, numberOfFrames: frame.length,
      numberOfChannels: 1, timestamp: audio.frames++ * Media.FRAME_MS * 1000, data: frame }));
  }

  _encoded(chunk) {
    if (!this.room) return;
    const payload = new Uint8Array(chunk.byteLength);
    chunk.copyTo(payload);
    const up = this.uplink;
    const level = up.levels.length ? up.levels.shift() : Media.SILENCE_DBOV;
    const flags = Media.FEC | (up.talking ? 0 : Media.MARKER);
    up.talking = true;
    this._sendMedia({ type: Media.DATA, flags, seq: up.seq, timestamp: up.timestamp, level,
      voice: level <= Media.VOICE_DBOV }, payload);
    up.seq = (up.seq + 1) & 0xffff;
    up.timestamp = (up.timestamp + PROFILES[this.room.roomType].frame_samples) % 2 ** 32;
  }

  _sendMedia(header, payload) {
    const crypto = this.crypto;
    if (!crypto) return; // between sockets (a reconnect): nothing to send on
    const roomType = this.room.roomType;
    // Sealing is asynchronous: chained, so datagrams leave in packet-index order.
    this.uplink.chain = this.uplink.chain.then(async () => {
      const datagram = await crypto.seal({ ...header, roomType }, payload);
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.crypto === crypto) this.ws.send(datagram);
    }).catch((err) => console.error("OpenGME send:", err));
  }

  async _onDatagram(data) {
    const crypto = this.crypto;
    if (!crypto || !this.room) return;
    const packet = await crypto.open(data);
    if (!packet || !this.room || crypto !== this.crypto) return;
    if (packet.type === Media.CHALLENGE) {
      this._sendMedia({ type: Media.CHALLENGE }, packet.payload);
      return;
    }
    if (packet.type !== Media.DATA) return;
    const tinyid = packet.id;
    const openId = this.members.get(tinyid);
    if (openId === undefined) return;
    const now = performance.now();
    const state = this.levels.get(tinyid) || { meter: 0, at: 0, lastVoice: 0, speaking: false };
    state.meter = meterLevel(packet.level);
    state.at = now;
    if (packet.level <= Media.VOICE_DBOV) {
      state.lastVoice = now;
      if (!state.speaking) {
        state.speaking = true;
        this._emit(EventType.USER_UPDATE, { event_id: UserUpdateEvent.HAS_AUDIO, user_list: [openId] });
      }
    }
    this.levels.set(tinyid, state);
    if (!this.speakerOn || this.blacklist.has(openId)) return;
    this._decoder(tinyid).decode(new EncodedAudioChunk({ type: "key", timestamp: packet.seq * Media.FRAME_MS * 1000,
      data: packet.payload }));
  }

  _decoder(tinyid) {
    let decoder = this.decoders.get(tinyid);
    if (!decoder || decoder.state === "closed") {
      decoder = new AudioDecoder({
        output: (data) => {
          const samples = new Float32Array(data.numberOfFrames);
          data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
          data.close();
          this._post({ type: "frame", id: tinyid, samples });
          const volume = this.memberVolumes.get(this.members.get(tinyid));
          if (volume !== undefined) this._post({ type: "volume", id: tinyid, gain: volume / 100 });
        },
        error: (err) => console.error("OpenGME decoder:", err),
      });
      decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
      this.decoders.set(tinyid, decoder);
    }
    return decoder;
  }

  _tickVolumes() {
    if (!this.room) return;
    const now = performance.now();
    const volumes = {};
    for (const [tinyid, state] of this.levels) {
      const openId = this.members.get(tinyid);
      if (openId === undefined) continue;
      volumes[openId] = now - state.at < 500 ? state.meter : 0;
      if (state.speaking && now - state.lastVoice > SPEAKING_TIMEOUT_MS) {
        state.speaking = false;
        this._emit(EventType.USER_UPDATE, { event_id: UserUpdateEvent.NO_AUDIO, user_list: [openId] });
      }
    }
    if (Object.keys(volumes).length) this._emit(EventType.USER_VOLUMES, volumes);
  }
}

// GME H5's own names for the calls it has (Init, SetTMGDelegate, EnterRoom, EnableMic, EnableSpeaker,
// SetMicVolume, ExitRoom), so code written against WebGMEAPI reads the same.
for (const [h5, ours] of [["Init", "init"], ["SetTMGDelegate", "setTMGDelegate"], ["EnterRoom", "enterRoom"],
  ["ExitRoom", "exitRoom"], ["EnableMic", "enableMic"], ["EnableSpeaker", "enableSpeaker"],
  ["SetMicVolume", "setMicVolume"]]) {
  OpenGME.prototype[h5] = OpenGME.prototype[ours];
}
