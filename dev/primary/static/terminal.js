// The dev primary's web terminal page: xterm.js wired to a reconnecting
// PTY on the workspace proxy, as Coder's dashboard does it.
//
//  1. The reconnect ID comes from the page's ?reconnect= (a new random one
//     is put there otherwise), so reloading the page attaches to the same
//     PTY, whose recent output the agent replays.
//  2. The page asks this primary for a signed PTY token (same-origin POST
//     with the dashboard session cookie).
//  3. It opens the websocket on the proxy with reconnect, width, height and
//     the token in the query. Output arrives as raw bytes; keystrokes and
//     resizes go out as JSON objects {"data": "..."} and
//     {"height": rows, "width": cols}, each one binary message.
(function () {
  "use strict";

  const root = document.getElementById("terminal");
  const status = document.getElementById("status");
  const reconnectButton = document.getElementById("reconnect");
  const agentID = root.dataset.agentId;
  const ptyURL = root.dataset.ptyUrl;
  const tokenPath = root.dataset.tokenPath;
  const tokenParam = root.dataset.tokenParam;

  const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  // A version 4 UUID; crypto.randomUUID needs a secure context, which a
  // plain-http dashboard on another domain than localhost is not.
  function newUUID() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  const params = new URLSearchParams(window.location.search);
  let reconnect = params.get("reconnect");
  if (!reconnect || !uuidPattern.test(reconnect)) {
    reconnect = newUUID();
    params.set("reconnect", reconnect);
    window.history.replaceState(null, "", window.location.pathname + "?" + params.toString() + window.location.hash);
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    reconnectButton.hidden = state !== "disconnected" && state !== "error";
  }

  const term = new Terminal({
    cursorBlink: true,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
    fontSize: 14,
    scrollback: 5000,
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(root);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());

  const encoder = new TextEncoder();
  let ws = null;

  function send(message) {
    if (ws !== null && ws.readyState === WebSocket.OPEN) {
      ws.send(encoder.encode(JSON.stringify(message)));
    }
  }
  term.onData((data) => send({ data: data }));
  term.onResize((size) => send({ height: size.rows, width: size.cols }));

  async function signedToken() {
    const res = await fetch(tokenPath, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ url: ptyURL, agentID: agentID }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      throw new Error((body.message || "HTTP " + res.status) + (body.detail ? " " + body.detail : ""));
    }
    return body.signed_token;
  }

  async function connect() {
    setStatus("connecting", "Connecting…");
    let token;
    try {
      token = await signedToken();
    } catch (err) {
      setStatus("error", "No terminal token: " + err.message);
      return;
    }
    const q = new URLSearchParams({
      reconnect: reconnect,
      width: String(term.cols),
      height: String(term.rows),
    });
    q.set(tokenParam, token);
    const socket = new WebSocket(ptyURL + "?" + q.toString());
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      setStatus("connected", "Connected");
      term.focus();
    };
    socket.onmessage = (ev) => {
      term.write(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data));
    };
    socket.onclose = (ev) => {
      if (ws === socket) {
        ws = null;
      }
      setStatus("disconnected", "Disconnected" + (ev.reason ? ": " + ev.reason : "") + "; reconnect or reload to resume this session");
    };
    ws = socket;
  }

  reconnectButton.addEventListener("click", () => {
    if (ws === null) {
      connect();
    }
  });
  connect();
})();
