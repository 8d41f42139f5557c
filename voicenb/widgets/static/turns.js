// The last turns as a table, each with a play button that asks the kernel for that turn's
// audio (played only when pressed). Text goes in with textContent: never markup.

// "You: <text>" with the label in bold; the text is text, never markup.
function labelled(box, label, text) {
  box.replaceChildren();
  if (!text) return;
  const b = document.createElement("b");
  b.textContent = label;
  box.append(b, document.createTextNode(text));
}

function renderTurns(box, model) {
  const rows = model.get("turns") || [];
  box.replaceChildren();
  if (!rows.length) return;
  const table = document.createElement("table");
  table.className = "voicenb-turns";
  table.style.fontSize = "90%";
  table.style.borderCollapse = "collapse";
  const head = table.insertRow();
  for (const name of ["#", "", "status", "you said", "answer", "time"]) {
    const th = document.createElement("th");
    th.textContent = name;
    th.style.textAlign = "left";
    th.style.padding = "0 0.5em";
    head.appendChild(th);
  }
  for (const row of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = String(row.turn);
    const play = document.createElement("button");
    play.className = "voicenb-play jupyter-button";
    play.textContent = "\u25B6";
    play.setAttribute("aria-label", "Play turn " + row.turn);
    play.disabled = !row.audio;
    play.onclick = () => model.send({ type: "play", turn: row.turn });
    tr.insertCell().appendChild(play);
    tr.insertCell().textContent = row.status || "";
    tr.insertCell().textContent = row.said || "";
    tr.insertCell().textContent = row.answer || "";
    tr.insertCell().textContent = row.seconds == null ? "" : row.seconds.toFixed(1) + " s";
    for (const td of tr.cells) { td.style.padding = "0.1em 0.5em"; td.style.verticalAlign = "top"; }
  }
  box.appendChild(table);
}

// The kernel answers a play request with the turn's audio: play it once, here.
function listenForAudio(model) {
  model.on("msg:custom", (content, buffers) => {
    if (!content || content.type !== "audio" || !buffers || !buffers.length) return;
    const blob = new Blob([buffers[0]], { type: content.mime || "audio/wav" });
    const url = URL.createObjectURL(blob);
    const player = new Audio(url);
    player.dataset.turn = String(content.turn);
    player.onended = () => URL.revokeObjectURL(url);
    window.__voicenbPlayed = (window.__voicenbPlayed || 0) + 1;
    player.play();
  });
}
