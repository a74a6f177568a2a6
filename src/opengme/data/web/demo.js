// The /demo page: joins a room with the browser SDK, signing through the development signer.
import { ErrorCode, EventType, OpenGME, RoomType, UserUpdateEvent } from "/sdk/opengme.js";

const $ = (id) => document.getElementById(id);
const gme = new OpenGME();
const events = [];
const speaking = new Set();
const levels = {};
window.demo = { gme, events }; // for the page's tests and for poking at from the developer tools

const params = new URLSearchParams(location.search);
for (const name of ["app", "openid", "room"]) if (params.has(name)) $(name).value = params.get(name);

function status(text) { $("status").textContent = text; }

function render() {
  const list = $("members");
  list.replaceChildren();
  for (const openId of gme.getRoomMembers()) {
    const li = document.createElement("li");
    const me = openId === gme.openId;
    const talking = me ? gme.getMicLevel() > 20 : speaking.has(openId);
    li.dataset.openid = openId;
    li.dataset.speaking = talking ? "yes" : "no";
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    const name = document.createElement("span");
    name.textContent = me ? `${openId} (me)` : openId;
    const meter = document.createElement("meter");
    meter.min = 0; meter.max = 100;
    meter.value = me ? gme.getMicLevel() : (levels[openId] || 0);
    meter.setAttribute("aria-label", `level of ${openId}`);
    const said = document.createElement("span");
    said.className = "sr";
    said.textContent = talking ? "speaking" : "";
    li.append(dot, name, meter, said);
    list.append(li);
  }
  $("mic-level").value = gme.getMicLevel();
}

gme.setTMGDelegate((type, data) => {
  events.push([type, data]);
  if (type === EventType.ENTER_ROOM) {
    if (data.result === ErrorCode.AV_OK) {
      status(`In room ${$("room").value}.`);
      $("exit").disabled = false;
      $("mic").disabled = $("speaker").disabled = false;
      $("speaker").checked = gme.enableSpeaker(true) === ErrorCode.AV_OK;
    } else {
      status(`Could not enter: ${data.result} ${data.error_info}`);
      $("enter").disabled = false;
    }
  } else if (type === EventType.RECONNECT_START) {
    status(`Connection lost (${data.error_info}); reconnecting…`);
    speaking.clear();
  } else if (type === EventType.RECONNECT_SUCCESS) {
    status(`In room ${$("room").value} (reconnected).`);
  } else if (type === EventType.EXIT_ROOM || type === EventType.ROOM_DISCONNECT) {
    status(type === EventType.EXIT_ROOM ? "Left the room." : `Removed from the room (${data.result}): ${data.error_info}`);
    $("enter").disabled = false;
    $("exit").disabled = $("mic").disabled = $("speaker").disabled = true;
    $("mic").checked = $("speaker").checked = false;
    speaking.clear();
  } else if (type === EventType.USER_UPDATE) {
    for (const openId of data.user_list) {
      if (data.event_id === UserUpdateEvent.HAS_AUDIO) speaking.add(openId);
      if (data.event_id === UserUpdateEvent.NO_AUDIO || data.event_id === UserUpdateEvent.EXIT) speaking.delete(openId);
    }
  } else if (type === EventType.USER_VOLUMES) {
    Object.assign(levels, data);
  }
  render();
});

async function signerState(appId) {
  const reply = await fetch(`/demo/api/status?app_id=${encodeURIComponent(appId)}`);
  return reply.json();
}

$("join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const appId = $("app").value.trim(), openId = $("openid").value.trim(), roomId = $("room").value.trim();
  $("enter").disabled = true;
  gme.uninit();
  gme.init(appId, openId);
  const reply = await fetch("/demo/api/authbuffer", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ app_id: appId, open_id: openId, room_id: roomId }) });
  const signed = await reply.json();
  if (signed.errorCode !== 0) {
    status(`The development signer refused: ${signed.message}`);
    $("enter").disabled = false;
    return;
  }
  status("Entering…");
  const code = gme.enterRoom(roomId, RoomType.FLUENCY, signed.userSig);
  if (code !== ErrorCode.AV_OK) { status(`enterRoom refused: ${code}`); $("enter").disabled = false; }
});

$("exit").addEventListener("click", () => gme.exitRoom());
$("mic").addEventListener("change", (e) => {
  const code = gme.enableMic(e.target.checked);
  if (code !== ErrorCode.AV_OK) { e.target.checked = false; status(`enableMic refused: ${code}`); }
});
$("speaker").addEventListener("change", (e) => gme.enableSpeaker(e.target.checked));

async function showSigner() {
  const state = await signerState($("app").value.trim());
  $("signing-state").textContent = !state.app_exists ? "" : state.dev_signing ?
    "Development signing is ON for this app." : "Development signing is OFF for this app: entering will be refused.";
}

$("app").addEventListener("change", showSigner);
if ($("app").value) showSigner();

setInterval(render, 200);
