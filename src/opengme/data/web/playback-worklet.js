// OpenGME browser SDK: playback. One jitter buffer per speaker (decoded 48 kHz mono frames queued;
// play starts once `startSamples` are buffered, a queue above `maxSamples` drops its oldest audio so
// delay cannot grow), per-speaker volume, the speaker volume, and the mix of all streams. While
// recording is on, the mixed output is posted back in blocks (the test and the demo's meter read it).
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.startSamples = o.startSamples;
    this.maxSamples = o.maxSamples;
    this.streams = new Map(); // id -> {chunks: Float32Array[], offset, buffered, playing, gain}
    this.gain = 1;
    this.recording = false;
    this.recorded = [];
    this.recordedSamples = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  stream(id) {
    let s = this.streams.get(id);
    if (!s) {
      s = { chunks: [], offset: 0, buffered: 0, playing: false, gain: 1 };
      this.streams.set(id, s);
    }
    return s;
  }

  command(m) {
    if (m.type === "frame") {
      const s = this.stream(m.id);
      s.chunks.push(m.samples);
      s.buffered += m.samples.length;
      while (s.buffered - s.offset > this.maxSamples && s.chunks.length > 1) {
        s.buffered -= s.chunks.shift().length;
        s.offset = 0;
      }
      if (s.buffered - s.offset >= this.startSamples) s.playing = true;
    } else if (m.type === "volume") {
      this.stream(m.id).gain = m.gain;
    } else if (m.type === "speaker") {
      this.gain = m.gain;
    } else if (m.type === "remove") {
      this.streams.delete(m.id);
    } else if (m.type === "record") {
      this.recording = m.on;
      this.recorded = [];
      this.recordedSamples = 0;
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    for (const s of this.streams.values()) {
      if (!s.playing) continue;
      let i = 0;
      while (i < out.length && s.chunks.length) {
        const chunk = s.chunks[0];
        const take = Math.min(out.length - i, chunk.length - s.offset);
        for (let k = 0; k < take; k++) out[i + k] += chunk[s.offset + k] * s.gain;
        i += take;
        s.offset += take;
        if (s.offset === chunk.length) {
          s.chunks.shift();
          s.buffered -= chunk.length;
          s.offset = 0;
        }
      }
      if (!s.chunks.length) s.playing = false; // ran dry: wait for the buffer to fill again
    }
    for (let i = 0; i < out.length; i++) out[i] = Math.max(-1, Math.min(1, out[i] * this.gain));
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (this.recording) {
      this.recorded.push(out.slice());
      this.recordedSamples += out.length;
      if (this.recordedSamples >= 4800) {
        const block = new Float32Array(this.recordedSamples);
        let at = 0;
        for (const part of this.recorded) { block.set(part, at); at += part.length; }
        this.port.postMessage(block, [block.buffer]);
        this.recorded = [];
        this.recordedSamples = 0;
      }
    }
    return true;
  }
}

registerProcessor("opengme-playback", PlaybackProcessor);
