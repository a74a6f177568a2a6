// The OpenGME console page: every change is a POST with the session's CSRF token; live rooms arrive
// over a WebSocket. Text from the server is always set as text (never as HTML).
const API = "/console/api";
const $ = (id) => document.getElementById(id);
let csrf = null;
let live = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function say(text) { $("message").textContent = text; }

async function call(path, body) {
  const options = body === undefined ? {} : { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" } };
  const reply = await fetch(API + path, { credentials: "same-origin", ...options });
  const data = await reply.json();
  if (reply.status === 401 && path !== "/login") showLogin();
  if (data.code !== 0) throw new Error(`${data.code}: ${data.message}`);
  return data;
}

async function act(what, path, body) {
  try {
    const data = await call(path, body);
    say(`${what}: done.`);
    return data;
  } catch (err) {
    say(`${what} failed: ${err.message}`);
    return null;
  }
}

function showLogin() {
  csrf = null;
  if (live) live.close();
  $("login").hidden = false;
  $("signed-in").hidden = $("logout").hidden = true;
}

async function showConsole() {
  $("login").hidden = true;
  $("signed-in").hidden = $("logout").hidden = false;
  await Promise.all([loadApps(), loadCharts()]);
  connectLive();
}

// --- apps --------------------------------------------------------------------------------------

let switches = [];

async function loadApps() {
  const data = await call("/apps");
  switches = data.switches;
  const body = $("apps-table").tBodies[0];
  body.replaceChildren();
  $("messages-app").replaceChildren(...data.apps.map((a) => el("option", { value: a.app_id }, `${a.app_id} ${a.name}`)));
  for (const app of data.apps) {
    const toggles = switches.map((name) => el("label", {},
      el("input", { type: "checkbox", checked: app[name], dataset: { app: app.app_id, switch: name },
        onchange: (e) => setSwitch(app.app_id, name, e.target.checked) }), name));
    const usage = Object.entries(app.usage).map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`).join(", ");
    body.append(el("tr", { dataset: { app: app.app_id } },
      el("td", {}, app.app_id), el("td", {}, app.name), el("td", {}, ...toggles), el("td", {}, usage),
      el("td", {}, el("button", { type: "button", className: "secondary", onclick: () => rotate(app.app_id) }, "Rotate key"))));
  }
}

function showKeyOnce(appId, key) {
  const note = $("key-once");
  note.hidden = false;
  note.textContent = `Permission key of ${appId} (shown once, copy it now): ${key}`;
}

async function setSwitch(appId, name, on) {
  await act(`${name} ${on ? "on" : "off"} for ${appId}`, "/apps/switches", { app_id: appId, [name]: on });
  await loadApps();
}

async function rotate(appId) {
  if (!confirm(`Replace the key of ${appId}? AuthBuffers signed with the old key stop working.`)) return;
  const data = await act(`new key for ${appId}`, "/apps/rotate", { app_id: appId });
  if (data) showKeyOnce(appId, data.key);
}

$("create-app").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = await act("create app", "/apps", { name: $("app-name").value });
  if (data) {
    showKeyOnce(data.app.app_id, data.key);
    $("app-name").value = "";
    await loadApps();
  }
});

// --- live rooms --------------------------------------------------------------------------------

function connectLive() {
  const url = new URL(`${API}/live`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  live = new WebSocket(url);
  live.onopen = () => { $("live-state").textContent = "live"; };
  live.onclose = () => {
    $("live-state").textContent = "disconnected";
    if (csrf) setTimeout(connectLive, 2000);
  };
  live.onmessage = (event) => renderRooms(JSON.parse(event.data));
}

function renderRooms(snapshot) {
  const list = $("rooms-list");
  const rooms = snapshot.rooms;
  if (!rooms.length) {
    list.replaceChildren(el("p", {}, "No room is open."));
    return;
  }
  const shown = rooms.length < snapshot.rooms_total ?
    el("p", {}, `The first ${rooms.length} of ${snapshot.rooms_total} rooms (${snapshot.members_total} members).`) : null;
  list.replaceChildren(...(shown ? [shown] : []), ...rooms.map((room) => {
    const members = room.members.map((m) => el("li", { dataset: { openid: m.open_id, speaking: m.speaking ? "yes" : "no" } },
      el("span", { className: "dot", "aria-hidden": "true" }),
      el("span", {}, m.open_id),
      el("meter", { min: 0, max: 100, value: m.level, "aria-label": `level of ${m.open_id}` }),
      m.speaking ? el("span", { className: "speaking" }, "speaking") : null,
      m.muted ? el("span", { className: "muted" }, "muted") : null,
      el("button", { type: "button", className: "secondary",
        onclick: () => act(`${m.muted ? "unmute" : "mute"} ${m.open_id}`, "/mute",
          { app_id: room.app_id, room_id: room.room_id, open_id: m.open_id, muted: !m.muted }) },
        m.muted ? "Unmute" : "Mute"),
      el("button", { type: "button", className: "danger", "aria-label": `kick ${m.open_id}`,
        onclick: () => act(`kick ${m.open_id}`, "/kick", { app_id: room.app_id, room_id: room.room_id, open_id: m.open_id }) },
        "Kick")));
    return el("article", { className: "room", dataset: { room: room.room_id, app: room.app_id } },
      el("h3", {}, `${room.room_id} `, el("small", {}, `app ${room.app_id}, ${room.members.length} member(s)`)),
      el("ul", { className: "members" }, ...members),
      el("button", { type: "button", className: "danger", onclick: () => {
        if (confirm(`Dissolve room ${room.room_id}? Everyone in it is removed.`)) {
          act(`dissolve ${room.room_id}`, "/dissolve", { app_id: room.app_id, room_id: room.room_id });
        }
      } }, "Dissolve room"));
  }));
}

// --- charts ------------------------------------------------------------------------------------

const SERIES = [["rooms", "Rooms"], ["members", "Members"], ["packets_per_second", "Packets/s relayed"]];

async function loadCharts() {
  const data = await call("/history");
  const now = Date.now() / 1000;
  $("charts-list").replaceChildren(...SERIES.map(([key, title]) => {
    const values = data.samples.map((s) => [s.at, s[key]]);
    const peak = Math.max(0, ...values.map(([, v]) => v));
    const top = Math.max(1, peak);
    const points = values.map(([at, v]) => `${(100 * (1 - (now - at) / 3600)).toFixed(2)},${(100 - 95 * v / top).toFixed(2)}`);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 100 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const last = values.length ? values[values.length - 1][1] : 0;
    svg.setAttribute("aria-label", `${title} over the last hour: now ${last}, peak ${peak}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
    return el("figure", { className: "chart", dataset: { series: key } }, svg,
      el("figcaption", {}, `${title}: now ${last}, peak ${peak}`));
  }));
}

// --- voice messages and errors -----------------------------------------------------------------

$("messages-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const appId = $("messages-app").value;
  const data = await act("list voice messages", `/messages?app_id=${encodeURIComponent(appId)}`);
  if (!data) return;
  $("messages-list").replaceChildren(...(data.messages.length ? data.messages.map((m) => el("li", {},
    `${new Date(m.created_at * 1000).toLocaleString()} — ${m.open_id}, ${(m.duration_ms / 1000).toFixed(1)} s `,
    el("audio", { controls: true, preload: "none", src: `${API}/messages/audio?file_id=${encodeURIComponent(m.file_id)}`,
      "aria-label": `voice message of ${m.open_id}` }),
    el("button", { type: "button", className: "secondary", onclick: (e) => transcribe(m.file_id, e.target) }, "Transcript"),
  )) : [el("li", {}, "No voice message for this app.")]));
});

async function transcribe(fileId, button) {
  button.disabled = true;
  const data = await act("transcript", "/messages/transcript", { file_id: fileId });
  button.replaceWith(el("q", { className: "transcript" }, data ? data.text || "(no words recognised)" : "(no transcript)"));
}

$("errors-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = await act("error lookup", `/errors?q=${encodeURIComponent($("errors-q").value)}`);
  if (!data) return;
  $("errors-list").replaceChildren(...data.errors.slice(0, 50).flatMap((e) => [
    el("dt", {}, `${e.value} ${e.name}`),
    el("dd", {}, e.description, ...(e.solutions || []).slice(0, 1).map((s) => el("div", {}, `What to do: ${s}`)))]));
  if (!data.errors.length) $("errors-list").replaceChildren(el("dt", {}, "No error code matches."));
});

// --- sign-in -----------------------------------------------------------------------------------

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const data = await call("/login", { token: $("token").value });
    csrf = data.csrf;
    $("token").value = "";
    say("Signed in.");
    await showConsole();
  } catch (err) {
    say(`Sign-in failed: ${err.message}`);
  }
});

$("logout").addEventListener("click", async () => {
  await act("sign out", "/logout", {});
  showLogin();
});

(async () => {
  const session = await call("/session");
  if (session.signed_in) {
    csrf = session.csrf;
    await showConsole();
  } else {
    showLogin();
  }
})();
setInterval(() => { if (csrf) loadCharts().catch(() => {}); }, 30000);
