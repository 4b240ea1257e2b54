// voiceconv softphone: call an agent from the browser, through the same consumer as a phone.
//
// The page speaks the Twilio Media Streams dialect over a WebSocket: `connected`, `start`
// (agent and custom parameters), 20 ms mu-law `media` frames from the microphone, `mark`
// echoes once the agent's audio before them has played, `dtmf` from the keypad and `stop`.
// From the server: `media`, `mark` and `clear` (played by softphone-worklet.js with Twilio's
// playout rules), plus one `call` message naming the call once it is recorded.
//
// The live transcript beside the call is the live monitor's feed of that call (live-feed.js,
// through the monitor's socket at the `call` message's `feedPath`): the same turns, tool calls
// with their results, barge-ins, key presses, control actions and system notes as the admin's
// live call page.
//
// Every panel's state is on `panel.voiceconvSoftphone` (and `window.voiceconvSoftphones`):
// counters of frames sent, audio received and played, marks and clears; `transcript` (the
// feed's turns) and `feedState`.
(function () {
  "use strict";

  function b64encode(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  }

  function b64decode(text) {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function randomSid(prefix) {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function parseParameters(text) {
    const out = {};
    for (const line of (text || "").split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return out;
  }

  class Softphone {
    constructor(panel) {
      this.panel = panel;
      this.agent = panel.dataset.agent || "";
      this.workletUrl = panel.dataset.workletUrl;
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      this.url = scheme + location.host + panel.dataset.wsPath;
      this.el = (name) => panel.querySelector("[data-vc=" + name + "]");
      this.ws = null;
      this.context = null;
      this.node = null;
      this.media = null;
      this.feed = null;
      this.feedTimer = null;
      this.resetStats();
      this.el("call").addEventListener("click", () => this.call());
      this.el("hangup").addEventListener("click", () => this.hangUp());
      for (const key of panel.querySelectorAll("[data-vc-digit]")) {
        key.addEventListener("click", () => this.dtmf(key.dataset.vcDigit));
      }
      this.render();
    }

    resetStats() {
      this.state = "idle";
      this.callSid = "";
      this.streamSid = "";
      this.reviewUrl = "";
      this.closeCode = null;
      this.error = "";
      this.seq = 0;
      this.chunk = 0;
      this.stats = {
        framesSent: 0, mediaReceived: 0, bytesReceived: 0, marksReceived: 0, marksEchoed: 0,
        clearsReceived: 0, clears: 0, samplesPlayed: 0, audibleSamplesPlayed: 0,
        queuedSamples: 0, droppedSamples: 0, dtmfSent: 0,
      };
    }

    get transcript() { return this.feed ? this.feed.turns : []; }

    get feedState() { return this.feed ? this.feed.state : ""; }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    numbered(event, body) {
      this.seq += 1;
      return Object.assign({ event, sequenceNumber: String(this.seq), streamSid: this.streamSid },
                           body);
    }

    async call() {
      if (this.state !== "idle" && this.state !== "ended") return;
      this.closeFeed();
      this.resetStats();
      this.el("transcript").replaceChildren();
      this.state = "connecting";
      this.render();
      try {
        // Echo cancellation keeps the agent's voice from the speakers out of the microphone
        // (else it would barge in on itself); with headphones it can be switched off.
        const box = this.el("processing");
        const processing = box ? box.checked : true;
        this.media = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: processing, noiseSuppression: processing,
                   autoGainControl: processing },
        });
        this.context = new AudioContext();
        await this.context.audioWorklet.addModule(this.workletUrl);
        this.node = new AudioWorkletNode(this.context, "voiceconv-softphone", {
          numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        });
        this.node.port.onmessage = (event) => this.fromWorklet(event.data);
        this.context.createMediaStreamSource(this.media).connect(this.node);
        this.node.connect(this.context.destination);
        await this.context.resume();
      } catch (err) {
        this.fail("No microphone: " + err.message);
        return;
      }
      this.streamSid = randomSid("MZ");
      this.ws = new WebSocket(this.url);
      this.ws.onopen = () => this.opened();
      this.ws.onmessage = (event) => this.fromServer(event.data);
      this.ws.onclose = (event) => this.closed(event.code);
      this.ws.onerror = () => { this.error = this.error || "connection failed"; };
    }

    opened() {
      this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
      const params = parseParameters(this.el("parameters") ? this.el("parameters").value : "");
      params.agent = this.agent;
      this.send(this.numbered("start", {
        start: {
          accountSid: "", streamSid: this.streamSid, callSid: "", tracks: ["inbound"],
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
          customParameters: params,
        },
      }));
      this.node.port.postMessage({ type: "capture", on: true });
      this.state = "in-call";
      this.render();
    }

    fromWorklet(msg) {
      if (msg.type === "frame") {
        if (this.state !== "in-call") return;
        const timestamp = this.chunk * 20;
        this.chunk += 1;
        this.stats.framesSent += 1;
        this.send(this.numbered("media", {
          media: { track: "inbound", chunk: String(this.chunk), timestamp: String(timestamp),
                   payload: b64encode(msg.frame) },
        }));
      } else if (msg.type === "played") {
        this.echoMark(msg.name);
      } else if (msg.type === "cleared") {
        for (const name of msg.marks) this.echoMark(name);
      } else if (msg.type === "stats") {
        Object.assign(this.stats, {
          samplesPlayed: msg.samplesPlayed, audibleSamplesPlayed: msg.audibleSamplesPlayed,
          queuedSamples: msg.queuedSamples, droppedSamples: msg.droppedSamples,
          clears: msg.clears,
        });
        this.renderStats();
      }
    }

    echoMark(name) {
      this.stats.marksEchoed += 1;
      this.send(this.numbered("mark", { mark: { name } }));
    }

    fromServer(text) {
      let msg;
      try { msg = JSON.parse(text); } catch (err) { return; }
      if (!msg || msg.streamSid !== this.streamSid) return;
      if (msg.event === "media" && msg.media && typeof msg.media.payload === "string") {
        const audio = b64decode(msg.media.payload);
        this.stats.mediaReceived += 1;
        this.stats.bytesReceived += audio.length;
        this.node.port.postMessage({ type: "media", audio }, [audio.buffer]);
      } else if (msg.event === "mark" && msg.mark) {
        this.stats.marksReceived += 1;
        this.node.port.postMessage({ type: "mark", name: String(msg.mark.name) });
      } else if (msg.event === "clear") {
        this.stats.clearsReceived += 1;
        this.node.port.postMessage({ type: "clear" });
      } else if (msg.event === "call" && msg.call) {
        this.callSid = msg.call.callSid || "";
        this.reviewUrl = msg.call.reviewUrl || "";
        if (msg.call.feedPath) this.openFeed(msg.call.feedPath);
        this.render();
      }
    }

    openFeed(path) {
      this.closeFeed();
      this.feed = new window.VoiceconvLiveFeed(path, this.el("transcript"), {
        // Subscribed as the call starts: "not live yet" is not "ended".
        endWhenNotLive: false,
        onState: () => this.renderFeedState(),
      });
      this.feed.open();
    }

    closeFeed() {
      if (this.feedTimer) clearTimeout(this.feedTimer);
      this.feedTimer = null;
      if (this.feed) this.feed.close();
    }

    dtmf(digit) {
      if (this.state !== "in-call") return;
      this.stats.dtmfSent += 1;
      this.send(this.numbered("dtmf", { dtmf: { track: "inbound_track", digit } }));
    }

    hangUp() {
      if (this.state !== "in-call" && this.state !== "connecting") return;
      this.send(this.numbered("stop", { stop: { accountSid: "", callSid: this.callSid } }));
      this.state = "ending";
      this.render();
      if (this.ws) this.ws.close(1000);
    }

    closed(code) {
      this.closeCode = code;
      this.teardown();
      // The feed brings the last turns and the call's end after the stream closes; it stops
      // by itself then (or here, if the end never comes).
      if (this.feed && this.feed.state !== "ended") {
        this.feedTimer = setTimeout(() => this.closeFeed(), 30000);
      }
      if (this.state === "connecting" && !this.error) {
        this.error = code === 1006 ? "refused (no permission?)" : "closed (" + code + ")";
      }
      this.state = "ended";
      this.render();
    }

    fail(message) {
      this.error = message;
      this.teardown();
      this.state = "ended";
      this.render();
    }

    teardown() {
      if (this.node) this.node.port.postMessage({ type: "capture", on: false });
      if (this.media) for (const track of this.media.getTracks()) track.stop();
      if (this.context) this.context.close();
      this.media = null;
      this.context = null;
      this.node = null;
    }

    render() {
      const labels = { idle: "Ready", connecting: "Connecting…", "in-call": "In call",
                       ending: "Hanging up…", ended: "Call ended" };
      let text = labels[this.state] || this.state;
      if (this.error) text += ": " + this.error;
      this.el("status").textContent = text;
      this.panel.dataset.state = this.state;
      this.el("call").disabled = !(this.state === "idle" || this.state === "ended");
      this.el("hangup").disabled = !(this.state === "in-call" || this.state === "connecting");
      const review = this.el("review");
      if (review) {
        review.hidden = !this.reviewUrl;
        review.href = this.reviewUrl || "#";
      }
      this.renderStats();
      this.renderFeedState();
    }

    renderFeedState() {
      const out = this.el("feed-state");
      if (!out) return;
      const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…",
                       ended: "call ended", closed: "" };
      out.textContent = this.feed ? (labels[this.feed.state] || "") : "";
    }

    renderStats() {
      const s = this.stats;
      const out = this.el("stats");
      if (out) {
        out.textContent = "sent " + (s.framesSent * 20 / 1000).toFixed(1) + " s · heard "
          + (s.samplesPlayed / 8000).toFixed(1) + " s of " + (s.bytesReceived / 8000).toFixed(1)
          + " s · marks " + s.marksEchoed + "/" + s.marksReceived + " · clears " + s.clears;
      }
    }
  }

  function init() {
    window.voiceconvSoftphones = window.voiceconvSoftphones || [];
    for (const panel of document.querySelectorAll("[data-voiceconv-softphone]")) {
      if (!panel.voiceconvSoftphone) {
        panel.voiceconvSoftphone = new Softphone(panel);
        window.voiceconvSoftphones.push(panel.voiceconvSoftphone);
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
