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
  el.append(button, status, partial, transcript, answer, turns);


  function show() {
    status.textContent = model.get("status");
    status.dataset.state = model.get("state");
    partial.textContent = model.get("partial");
    labelled(transcript, "You: ", model.get("transcript"));
    labelled(answer, "GPT: ", model.get("answer"));
    button.textContent = mic.on() ? "Stop" : "Start listening";
    button.setAttribute("aria-label", mic.on() ? "Stop" : "Start listening");
    renderTurns(turns, model);
  }
  for (const name of ["status", "state", "partial", "transcript", "answer", "turns"]) {
    model.on("change:" + name, show);
  }
  listenForAudio(model);
  const mic = kernelMicrophone(model, () => show());

  function stop() {
    mic.stop();
    model.send({ type: "stop" });
    show();
  }

  button.onclick = () => (mic.starting ? null : mic.on() ? stop() : mic.start());
  show();
  return () => { if (mic.on()) stop(); };
}

export default { render };
