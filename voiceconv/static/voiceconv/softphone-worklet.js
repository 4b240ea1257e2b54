// voiceconv softphone: the audio side, run on the browser's audio rendering thread.
//
// Input: the microphone at the context's rate -> low-pass FIR (3.4 kHz) -> resampled to
// 8 kHz -> G.711 mu-law -> 160-byte (20 ms) frames posted to the page, which sends them as
// Media Streams `media` messages.
// Output: mu-law audio the agent sent, played in order from a FIFO shared with its marks,
// exactly as Twilio plays a stream: a mark is echoed ("played") once the audio queued before
// it has been played; `clear` drops the queued audio at once and echoes the pending marks.

const TELEPHONE_RATE = 8000;
const FRAME_BYTES = 160;
const FIR_TAPS = 63;
const CUTOFF_HZ = 3400;
const AUDIBLE = 0.01; // a played sample louder than this counts as audible
const STATS_EVERY = 0.1; // seconds between stats messages

function ulawEncode(sample) {
  // sample: float in -1..1 -> one mu-law byte (G.711, bias 0x84, clip 32635)
  let s = Math.max(-32768, Math.min(32767, Math.round(sample * 32767)));
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  const magnitude = Math.min(s, 32635) + 0x84;
  let exponent = 7;
  for (let mask = 0x4000; (magnitude & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (magnitude >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

const ULAW_DECODE = new Float32Array(256);
for (let b = 0; b < 256; b++) {
  const u = ~b & 0xff;
  const exponent = (u >> 4) & 0x07;
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << exponent) - 0x84;
  ULAW_DECODE[b] = (u & 0x80 ? -magnitude : magnitude) / 32768;
}

function lowpass(cutoff, taps) {
  // Windowed-sinc (Blackman) low-pass; cutoff as a fraction of the sample rate.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1))
      + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class SoftphoneProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // capture
    this.capturing = false;
    this.taps = lowpass(Math.min(CUTOFF_HZ, 0.45 * sampleRate) / sampleRate, FIR_TAPS);
    this.ring = new Float32Array(FIR_TAPS);
    this.ringPos = 0;
    this.step = sampleRate / TELEPHONE_RATE; // input samples per telephone sample
    this.n = 0; // index of the current filtered input sample
    this.nextPos = 0; // input position of the next telephone sample
    this.prevY = 0;
    this.frame = new Uint8Array(FRAME_BYTES);
    this.frameFill = 0;
    this.framesSent = 0;
    // playout
    this.queue = []; // {audio: Uint8Array, offset} | {mark: string}
    this.queued = 0;
    this.outStep = TELEPHONE_RATE / sampleRate; // telephone samples per output sample
    this.phase = 0;
    this.prevS = 0;
    this.curS = 0;
    this.played = 0;
    this.audible = 0;
    this.dropped = 0;
    this.marksEchoed = 0;
    this.clears = 0;
    this.sinceStats = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "media") {
      this.queue.push({ audio: msg.audio, offset: 0 });
      this.queued += msg.audio.length;
    } else if (msg.type === "mark") {
      this.queue.push({ mark: msg.name });
    } else if (msg.type === "clear") {
      const marks = [];
      let dropped = 0;
      for (const item of this.queue) {
        if (item.mark !== undefined) marks.push(item.mark);
        else dropped += item.audio.length - item.offset;
      }
      this.queue = [];
      this.queued = 0;
      this.dropped += dropped;
      this.clears += 1;
      this.marksEchoed += marks.length;
      this.port.postMessage({ type: "cleared", dropped, marks });
      this.postStats();
    } else if (msg.type === "capture") {
      this.capturing = Boolean(msg.on);
    }
  }

  echoMarksAtHead() {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      const name = this.queue.shift().mark;
      this.marksEchoed += 1;
      this.port.postMessage({ type: "played", name });
    }
  }

  nextSample() {
    this.echoMarksAtHead();
    if (!this.queue.length) return 0;
    const head = this.queue[0];
    const value = ULAW_DECODE[head.audio[head.offset++]];
    this.queued -= 1;
    this.played += 1;
    if (Math.abs(value) > AUDIBLE) this.audible += 1;
    if (head.offset >= head.audio.length) {
      this.queue.shift();
      this.echoMarksAtHead();
    }
    return value;
  }

  capture(input) {
    const taps = this.taps;
    const ring = this.ring;
    for (let i = 0; i < input.length; i++) {
      ring[this.ringPos] = input[i];
      let acc = 0;
      let idx = this.ringPos;
      for (let k = 0; k < FIR_TAPS; k++) {
        acc += taps[k] * ring[idx];
        idx = idx === 0 ? FIR_TAPS - 1 : idx - 1;
      }
      this.ringPos = (this.ringPos + 1) % FIR_TAPS;
      while (this.nextPos <= this.n) {
        const frac = this.nextPos - (this.n - 1);
        this.frame[this.frameFill++] = ulawEncode(this.prevY + (acc - this.prevY) * frac);
        this.nextPos += this.step;
        if (this.frameFill === FRAME_BYTES) {
          const frame = this.frame;
          this.port.postMessage({ type: "frame", frame }, [frame.buffer]);
          this.framesSent += 1;
          this.frame = new Uint8Array(FRAME_BYTES);
          this.frameFill = 0;
        }
      }
      this.prevY = acc;
      this.n += 1;
    }
  }

  postStats() {
    this.port.postMessage({
      type: "stats",
      framesSent: this.framesSent,
      samplesPlayed: this.played,
      audibleSamplesPlayed: this.audible,
      queuedSamples: this.queued,
      droppedSamples: this.dropped,
      marksEchoed: this.marksEchoed,
      clears: this.clears,
    });
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    if (this.capturing && input) this.capture(input);
    const output = outputs[0];
    if (output && output[0]) {
      const out = output[0];
      for (let i = 0; i < out.length; i++) {
        this.phase += this.outStep;
        while (this.phase >= 1) {
          this.phase -= 1;
          this.prevS = this.curS;
          this.curS = this.nextSample();
        }
        out[i] = this.prevS + (this.curS - this.prevS) * this.phase;
      }
      for (let c = 1; c < output.length; c++) output[c].set(out);
      this.sinceStats += out.length / sampleRate;
      if (this.sinceStats >= STATS_EVERY) {
        this.sinceStats = 0;
        this.postStats();
      }
    }
    return true;
  }
}

registerProcessor("voiceconv-softphone", SoftphoneProcessor);
