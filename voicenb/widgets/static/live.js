// voicenb's live widget (after capture.js): stream the microphone to the kernel while you
// speak; the kernel streams it to AssemblyAI and answers each end of turn. Everything shown
// is set with textContent, so transcript and answer text is never markup.

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
  const turns = document.createElement("div");
  turns.className = "voicenb-live-turns";
  const voice = document.createElement("div");
  voice.className = "voicenb-live-voice";
  voice.style.color = "#777";
  el.append(button, status, partial, transcript, answer, voice, turns);
  // With speak=True the answer is read aloud here as it streams (speaker.js); the
  // microphone stays open, and speaking over the answer stops it.
  const speaker = model.get("speak") ? createSpeaker(model, { onChange: () => show() }) : null;
  const SAYING = { waiting: "preparing the spoken answer...",
                   playing: "speaking: talk to interrupt", ended: "", idle: "",
                   hushed: "stopped: you spoke over the answer",
                   blocked: "press Start listening to hear the answer" };


  function show() {
    status.textContent = model.get("status");
    status.dataset.state = model.get("state");
    partial.textContent = model.get("partial");
    labelled(transcript, "You: ", model.get("transcript"));
    labelled(answer, model.get("backend") === "assemblyai-agent" ? "Agent: " : "GPT: ",
             model.get("answer"));
    button.textContent = mic.on() ? "Stop" : "Start listening";
    button.setAttribute("aria-label", mic.on() ? "Stop" : "Start listening");
    renderTurns(turns, model);
    voice.textContent = speaker ? SAYING[speaker.state] || "" : "";
    voice.dataset.state = speaker ? speaker.state : "off";
  }
  for (const name of ["status", "state", "partial", "transcript", "answer", "turns"]) {
    model.on("change:" + name, show);
  }
  listenForAudio(model);
  const mic = kernelMicrophone(model, () => show(),
                               speaker ? (chunk) => speaker.hear(chunk) : null);

  function stop() {
    mic.stop();
    model.send({ type: "stop" });
    show();
  }

  button.onclick = () => {
    if (mic.starting) return;
    if (mic.on()) return stop();
    if (speaker) speaker.unlock(); // the click is the gesture that lets the page make sound
    mic.start();
  };
  show();
  model.send({ type: "front" }); // answers can be played here
  return () => {
    if (mic.on()) stop();
    if (speaker) speaker.close();
  };
}

export default { render };
