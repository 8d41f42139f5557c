// voicenb's live recorder: capture the microphone as 16 kHz mono 16-bit PCM with an
// AudioWorklet and send ~100 ms chunks to the kernel (model.send with binary buffers).
// Everything shown is set with textContent, so transcript and answer text is never markup.

const WORKLET = `
class VoicenbCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("voicenb-capture", VoicenbCapture);
`;

const RATE = 16000;
const CHUNK = RATE / 10; // 100 ms

function toInt16(f32, fromRate) {
  // Resample (linear) when the browser would not give us 16 kHz, then convert.
  const ratio = fromRate / RATE;
  const n = Math.floor(f32.length / ratio);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    const x = i * ratio, j = Math.floor(x), t = x - j;
    const a = f32[j] || 0, b = f32[Math.min(j + 1, f32.length - 1)] || 0;
    const v = Math.max(-1, Math.min(1, a + (b - a) * t));
    out[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  return out;
}

function render({ model, el }) {
  el.classList.add("voicenb-live");
  const button = document.createElement("button");
  button.className = "voicenb-live-button jupyter-button";
  const status = document.createElement("div");
  status.className = "voicenb-live-status";
  const partial = document.createElement("div");
  partial.className = "voicenb-live-partial";
  partial.style.color = "#777";
  const transcript = document.createElement("div");
  transcript.className = "voicenb-live-transcript";
  const answer = document.createElement("div");
  answer.className = "voicenb-live-answer";
  answer.style.whiteSpace = "pre-wrap";
  el.append(button, status, partial, transcript, answer);

  let ctx = null, stream = null, node = null, buffered = [], count = 0;

  function show() {
    status.textContent = model.get("status");
    status.dataset.state = model.get("state");
    partial.textContent = model.get("partial");
    const said = model.get("transcript"), reply = model.get("answer");
    transcript.textContent = said ? "You: " + said : "";
    answer.textContent = reply ? "GPT: " + reply : "";
    button.textContent = ctx ? "Stop" : "Start listening";
  }
  for (const name of ["status", "state", "partial", "transcript", "answer"]) {
    model.on("change:" + name, show);
  }

  function flush(all) {
    while (count >= CHUNK || (all && count > 0)) {
      const size = Math.min(CHUNK, count);
      const chunk = new Int16Array(size);
      let filled = 0;
      while (filled < size) {
        const head = buffered[0];
        const take = Math.min(head.length, size - filled);
        chunk.set(head.subarray(0, take), filled);
        filled += take;
        if (take === head.length) buffered.shift();
        else buffered[0] = head.subarray(take);
      }
      count -= size;
      model.send({ type: "audio" }, undefined, [chunk.buffer]);
    }
  }

  async function start() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      model.send({ type: "error", message: "this page is not a secure context (use https:// or localhost)" });
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    } catch (err) {
      model.send({ type: "error", message: String((err && (err.name + ": " + err.message)) || err) });
      return;
    }
    try {
      ctx = new AudioContext({ sampleRate: RATE });
    } catch (err) {
      ctx = new AudioContext();
    }
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
    await ctx.audioWorklet.addModule(url);
    const source = ctx.createMediaStreamSource(stream);
    node = new AudioWorkletNode(ctx, "voicenb-capture");
    node.port.onmessage = (event) => {
      const pcm = toInt16(event.data, ctx.sampleRate);
      buffered.push(pcm);
      count += pcm.length;
      flush(false);
    };
    source.connect(node);
    node.connect(ctx.destination); // keeps the worklet running; it outputs silence
    if (ctx.state !== "running") await ctx.resume();
    model.send({ type: "start", rate: ctx.sampleRate, state: ctx.state });
    show();
  }

  function stop() {
    flush(true);
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (ctx) ctx.close();
    ctx = stream = node = null;
    buffered = [];
    count = 0;
    model.send({ type: "stop" });
    show();
  }

  button.onclick = () => (ctx ? stop() : start());
  show();
  return () => { if (ctx) stop(); };
}

export default { render };
