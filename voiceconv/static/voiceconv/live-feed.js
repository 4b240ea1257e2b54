// voiceconv live feed: one call's conversation as it happens, from the live monitor's socket
// (/voiceconv/live/<CallSid>/). The socket sends a snapshot of the call so far, then the call's
// feed: every turn as it is recorded (caller and agent, tool calls with their results,
// barge-ins with what was heard, key presses, control actions, timers and other system notes)
// and the call's start and end. The admin's live call page and the softphone panel both show
// it with this one renderer.
//
//   const feed = new VoiceconvLiveFeed(path, listElement, {labels, onTurn, onCall, onState,
//                                                          onMessage, keepLive});
//   feed.open(); feed.send({...}); feed.close();
//
// `feed.turns` holds the turns shown (by sequence), `feed.state` is "connecting", "live",
// "reconnecting", "ended" (the call ended: no more reconnects) or "closed".
(function () {
  "use strict";

  const ROLES = { caller: "caller", assistant: "agent", tool: "tool", dtmf: "key press",
                  control: "control", system: "system" };

  function clock(ms) {
    if (ms == null) return "";
    const s = Math.max(0, ms) / 1000;
    return Math.floor(s / 60) + ":" + (s % 60).toFixed(1).padStart(4, "0");
  }

  class VoiceconvLiveFeed {
    constructor(path, list, options) {
      const o = options || {};
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      this.url = /^wss?:/.test(path) ? path : scheme + location.host + path;
      this.list = list;
      this.roles = Object.assign({}, ROLES, (o.labels && o.labels.roles) || {});
      this.interruptedLabel = (o.labels && o.labels.interrupted) || "interrupted";
      this.onTurn = o.onTurn || function () {};
      this.onCall = o.onCall || function () {};
      this.onState = o.onState || function () {};
      this.onMessage = o.onMessage || function () {};
      // Whether a snapshot saying the call is not live means it ended (the monitor page,
      // shown only for live calls); the softphone may subscribe before its call is live.
      this.endWhenNotLive = o.endWhenNotLive !== false;
      this.turns = [];
      this.state = "connecting";
      this.ws = null;
      this.delay = 500;
      this.timer = null;
    }

    open() {
      if (this.state === "ended" || this.state === "closed") return;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => { this.delay = 500; this.setState("live"); };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        if (this.state === "ended" || this.state === "closed") return;
        this.setState("reconnecting");
        this.timer = setTimeout(() => this.open(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      };
      ws.onmessage = (e) => {
        let m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        if (m.event === "snapshot") {
          (m.turns || []).forEach((t) => this.addTurn(t));
          this.call(m.call, true);
        } else if (m.event === "turn") {
          this.addTurn(m);
        } else if (m.event === "started" || m.event === "ended") {
          this.call(m.call, false);
        }
        this.onMessage(m);
      };
    }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(message));
        return true;
      }
      return false;
    }

    close() {
      if (this.timer) clearTimeout(this.timer);
      if (this.state !== "ended") this.setState("closed");
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
    }

    setState(state) {
      this.state = state;
      this.onState(state);
    }

    call(c, fromSnapshot) {
      if (!c) return;
      const ended = Boolean(c.ended_at) || (fromSnapshot && c.live === false && this.endWhenNotLive);
      this.onCall(c, ended);
      if (ended && this.state !== "ended") {
        this.setState("ended");
        const ws = this.ws;
        this.ws = null;
        if (ws) ws.close(1000);
      }
    }

    addTurn(t) {
      if (!t || this.turns.some((x) => x.sequence === t.sequence)) return null;
      const at = this.turns.findIndex((x) => x.sequence > t.sequence);
      if (at < 0) this.turns.push(t); else this.turns.splice(at, 0, t);
      const li = document.createElement("li");
      li.className = "vc-" + t.role + (t.interrupted ? " vc-interrupted" : "");
      li.dataset.sequence = t.sequence;
      li.dataset.role = t.role;
      const role = document.createElement("span");
      role.className = "vc-role";
      role.textContent = this.roles[t.role] || t.role;
      li.appendChild(role);
      if (t.interrupted) {
        const heard = document.createElement("span");
        heard.className = "vc-heard";
        heard.textContent = t.heard_text;
        li.appendChild(heard);
        if (t.unheard_text) {
          const del = document.createElement("del");
          del.textContent = t.unheard_text;
          li.appendChild(del);
        }
      } else {
        li.appendChild(document.createTextNode(t.text));
      }
      const chip = document.createElement("span");
      chip.className = "vc-chip";
      const bits = [clock(t.offset_ms)];
      if (t.latency_ms != null) bits.push(t.latency_ms + " ms");
      if (t.interrupted) bits.push(this.interruptedLabel);
      chip.textContent = bits.filter(Boolean).join(" · ");
      li.appendChild(chip);
      if (this.list) {
        const after = Array.from(this.list.children).find(
          (x) => Number(x.dataset.sequence) > t.sequence);
        this.list.insertBefore(li, after || null);
        this.list.scrollTop = this.list.scrollHeight;
      }
      this.onTurn(t, li);
      return li;
    }
  }

  VoiceconvLiveFeed.clock = clock;
  window.VoiceconvLiveFeed = VoiceconvLiveFeed;
})();
