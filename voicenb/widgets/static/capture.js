// voicenb's microphone capture, shared by the recorder and the live widget (the Python side
// puts this file in front of each widget's own module): an AudioWorklet turns the microphone
// into 16 kHz mono 16-bit PCM, handed over in ~100 ms chunks. Nothing is ever played.

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

// Why this page cannot have the microphone, in words, or null when it may ask for it.
function microphoneBlocked() {
  if (!window.isSecureContext) {
    return "this page is not a secure context: browsers only offer the microphone on " +
      "https:// pages or on localhost (open Jupyter at http://localhost or 127.0.0.1, " +
      "or through an SSH tunnel)";
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return "this front end gives widgets no microphone (VS Code's notebook view, for one, " +
      "refuses it): open the notebook in JupyterLab or Notebook 7 in a browser";
  }
  return null;
}

// Start capturing; onChunk(Int16Array) gets ~100 ms at a time. Resolves to an object whose
// stop() flushes the last partial chunk and releases the microphone. Throws an Error whose
// message says why the microphone is unavailable.
async function startCapture(onChunk) {
  const blocked = microphoneBlocked();
  if (blocked) throw new Error(blocked);
  let stream;
  try {
    // Echo cancellation on: when an answer is spoken, the microphone does not hear it back.
    stream = await navigator.mediaDevices.getUserMedia(
      { audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    const name = (err && err.name) || "Error";
    const why = name === "NotAllowedError"
      ? "the microphone was refused: allow it for this page in the address bar's site settings"
      : name === "NotFoundError" ? "no microphone was found on this computer"
      : name + ": " + ((err && err.message) || err);
    throw new Error(why);
  }
  let ctx;
  try {
    ctx = new AudioContext({ sampleRate: RATE });
  } catch (err) {
    ctx = new AudioContext();
  }
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
  await ctx.audioWorklet.addModule(url);
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "voicenb-capture");
  const mute = ctx.createGain();
  mute.gain.value = 0; // the worklet must reach the destination to run; it is silent there
  let buffered = [], count = 0;

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
      onChunk(chunk);
    }
  }

  node.port.onmessage = (event) => {
    const pcm = toInt16(event.data, ctx.sampleRate);
    buffered.push(pcm);
    count += pcm.length;
    flush(false);
  };
  source.connect(node);
  node.connect(mute);
  mute.connect(ctx.destination);
  if (ctx.state !== "running") await ctx.resume();
  return {
    rate: ctx.sampleRate,
    stop() {
      flush(true);
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
    },
  };
}

// Capture straight to the kernel: "start" (with the rate), then "audio" messages of ~100 ms
// of PCM each (each also handed to tap(chunk) first, when given: the answer being read aloud
// listens for the person speaking over it). Resolves to the capture, or to null after
// telling the kernel why the microphone is unavailable ("error").
async function captureToKernel(model, tap) {
  try {
    const capture = await startCapture((chunk) => {
      if (tap) tap(chunk);
      model.send({ type: "audio" }, undefined, [chunk.buffer]);
    });
    model.send({ type: "start", rate: capture.rate });
    return capture;
  } catch (err) {
    model.send({ type: "error", message: err.message, local: pageIsLocal() });
    return null;
  }
}

// Whether this page comes from this computer (so the kernel most likely runs here too, and
// can use the microphone itself).
function pageIsLocal() {
  const host = window.location.hostname;
  return ["localhost", "127.0.0.1", "[::1]", "::1", ""].includes(host) ||
    window.location.protocol.startsWith("vscode");
}

// A widget's microphone: start() captures to the kernel (calling changed() as it starts and
// once it runs or failed), stop() releases it; `on` and `starting` say where it is.
function kernelMicrophone(model, changed, tap) {
  const mic = { capture: null, starting: false };
  mic.on = () => mic.capture !== null;
  mic.start = async () => {
    mic.starting = true;
    changed();
    mic.capture = await captureToKernel(model, tap);
    mic.starting = false;
    changed();
  };
  mic.stop = () => {
    if (mic.capture) mic.capture.stop();
    mic.capture = null;
  };
  return mic;
}
