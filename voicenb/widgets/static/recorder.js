// voicenb's recorder (after capture.js and turns.js): one push-to-talk button. While you
// speak, 16 kHz PCM goes to the kernel in ~100 ms chunks; Stop hands the clip over as a turn.
// The status line ticks here, from this page's clock, and shows the kernel's state as soon as
// it changes; the page shows "stopping" itself at Stop, so it never flashes a wrong state.

const BUSY = new Set(["recording", "stopping", "started", "uploading", "transcribing", "answering"]);

function render({ model, el }) {
  el.classList.add("voicenb-recorder");
  const row = document.createElement("div");
  row.style.display = "flex";
  row.style.alignItems = "flex-start";
  row.style.gap = "0.75em";
  const button = document.createElement("button");
  button.className = "voicenb-record jupyter-button";
  button.style.flex = "none";
  button.style.width = "auto";
  const status = document.createElement("span");
  status.className = "voicenb-status";
  status.setAttribute("role", "status");
  status.style.flex = "1";
  row.append(button, status);
  const transcript = document.createElement("div");
  transcript.className = "voicenb-transcript";
  const answer = document.createElement("div");
  answer.className = "voicenb-answer";
  answer.style.whiteSpace = "pre-wrap";
  transcript.style.marginTop = answer.style.marginTop = "0.4em";
  const turns = document.createElement("div");
  turns.style.marginTop = "0.6em";
  const voice = document.createElement("div");
  voice.className = "voicenb-voice";
  voice.style.color = "#777";
  el.append(row, transcript, answer, voice, turns);
  // With speak=True the answer is read aloud here as it streams (speaker.js); pressing
  // Record again stops it.
  const speaker = model.get("speak") ? createSpeaker(model, { onChange: () => show() }) : null;
  const SAYING = { waiting: "preparing the spoken answer...",
                   playing: "speaking: press Record to interrupt",
                   hushed: "stopped: you spoke over the answer",
                   blocked: "press Record once to let this page play the answer" };

  let local = null, since = performance.now(), shown = "";

  function state() {
    return local || model.get("state");
  }

  function paint() {
    const s = state();
    const seconds = (performance.now() - since) / 1000;
    const text = local === "stopping" ? "stopping" : model.get("status");
    status.textContent = text + (BUSY.has(s) ? " " + seconds.toFixed(1) + " s" : "");
    status.dataset.state = s;
    status.style.color = s === "error" ? "#b00020" : s === "ok" ? "#1b5e20" : "#555";
  }

  function show() {
    const s = state();
    if (s !== shown) { shown = s; since = performance.now(); }
    const kernelMic = model.get("kernel_mic");
    const recording = mic.on() || mic.starting ||
      (kernelMic && model.get("state") === "recording" && local !== "stopping");
    button.textContent = recording ? "\u25A0 Stop" : "\u25CF Record";
    button.setAttribute("aria-label", recording ? "Stop" : "Record");
    button.title = recording ? "Stop: your question becomes a turn" : "Record a question";
    button.disabled = !model.get("capture") || (local === "stopping");
    button.style.display = model.get("capture") ? "" : "none";
    labelled(transcript, "You: ", model.get("transcript"));
    labelled(answer, "GPT: ", model.get("answer"));
    renderTurns(turns, model);
    voice.textContent = speaker ? SAYING[speaker.state] || "" : "";
    voice.dataset.state = speaker ? speaker.state : "off";
    paint();
  }
  for (const name of ["status", "state", "transcript", "answer", "turns", "capture", "kernel_mic"]) {
    model.on("change:" + name, () => {
      if (name === "state" && local === "stopping") local = null; // the kernel has it
      show();
    });
  }
  listenForAudio(model);
  const mic = kernelMicrophone(model, () => show());
  const ticker = setInterval(paint, 100);

  function stop() {
    if (!mic.on()) return;
    mic.stop();
    local = "stopping";
    model.send({ type: "stop" });
    show();
  }

  function toggleKernelMic() {
    // The kernel records from its own microphone; the page only says when.
    if (model.get("state") === "recording") {
      local = "stopping";
      model.send({ type: "kernel-stop" });
    } else {
      model.send({ type: "kernel-start" });
    }
    show();
  }

  button.onclick = () => {
    if (mic.starting) return;
    if (speaker && !mic.on()) {
      // a new question speaks over the answer being read (or waiting for this click)
      if (["playing", "waiting", "blocked"].includes(speaker.state)) speaker.hush();
      speaker.unlock(); // the click is the gesture that lets the page make sound
    }
    if (model.get("kernel_mic")) toggleKernelMic();
    else if (mic.on()) stop();
    else mic.start();
  };
  show();
  model.send({ type: "front" }); // answers can be played here
  return () => {
    clearInterval(ticker);
    if (mic.on()) stop();
    if (speaker) speaker.close();
  };
}

export default { render };
