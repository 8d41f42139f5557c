// voicenb's talk-back player (after capture.js, before the widget's own module). The kernel
// sends each sentence of an answer as a WAV as soon as it is synthesised; the sentences are
// decoded and scheduled back to back on one AudioContext clock, so the answer plays without
// gaps while later sentences are still on their way. Playback stops at once on the kernel's
// "hush", or when hear() finds the person speaking into the microphone (barge-in).
//
// Messages (anywidget custom messages; `answer` is an int the kernel picks per answer):
//   kernel -> page  {type: "say", answer, seq} + [WAV bytes]  sentence seq (0, 1, ...) of answer
//                   {type: "said", answer, count}             the answer has count sentences
//                   {type: "hush", answer?}                   stop now (no answer: whatever plays)
//   page -> kernel  {type: "playing", answer, seq}            sentence seq starts sounding now
//                   {type: "ended", answer, played}           all count sentences have played
//                   {type: "hushed", answer, played, reason}  stopped; reason "kernel", "voice",
//                                                             or "replaced" (a newer answer came)
//                   {type: "speak-error", answer, seq, message}  undecodable sentence: skipped
// `played` maps each sentence that started ("0", "1", ...) to the seconds of it played.
// A "say" for a new answer id replaces the answer playing. Once an answer is hushed (or hushed
// by id before its first sentence came), its late "say" and "said" are ignored. A kernel
// "hush" is always answered by "hushed", even when nothing was playing (then played may be {}).

// Seconds between a sentence being decoded and its first sound, when nothing plays: enough
// for the scheduling call to land before the audio thread reaches the start time (a few
// 128-frame render quanta). Were it late, Web Audio would start the clip at once, from its
// beginning: nothing is lost, the report is just a quantum early. (It was 40 ms; every answer
// waited those 30 ms more for no gain.)
const SPEAKER_LEAD = 0.01;
// A stop fades out over this long rather than cutting mid-wave (an audible click).
const SPEAKER_FADE = 0.008;
// Barge-in: microphone chunks (16 kHz Int16, ~100 ms) whose RMS reaches VOICE_RMS, for
// VOICE_CHUNKS chunks in a row. 500 is about -36 dBFS: speech near a laptop or headset
// microphone is -30..-15 dBFS, while the answer's own sound, after the browser's echo
// cancellation (on in capture.js), leaves -50 dBFS or less. Two chunks (~200 ms) so that a
// click, a cough or a burst of echo before the canceller adapts does not cut the answer.
const VOICE_RMS = 500;
const VOICE_CHUNKS = 2;
// Answers (and messages sent) kept on the player for inspection; older ones are dropped.
const SPEAKER_KEEP = 10;

// Root mean square of 16-bit PCM, in sample units (0..32768).
function chunkRms(pcm) {
  if (!pcm || !pcm.length) return 0;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
  return Math.sqrt(sum / pcm.length);
}

// decodeAudioData detaches the ArrayBuffer it is given: decode a copy, never the message's.
function speakerBytes(buffer) {
  if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength).slice().buffer;
  }
  return buffer.slice(0);
}

// The player of one widget. It listens to the model's custom messages itself. Returns
//   speaker.unlock()   call from a click (Start): browsers let a page make sound only after a
//                      gesture; resolves once audio runs. Sentences that came before wait.
//   speaker.hear(pcm)  each microphone chunk (Int16Array, 16 kHz); true when it stopped the
//                      answer (reason "voice"). Cheap, and a no-op unless an answer is playing.
//   speaker.hush()     stop now, as the kernel's "hush" does (reason "kernel").
//   speaker.close()    stop without a word, stop listening, release the audio device.
//   speaker.state      "idle" | "waiting" (for the next sentence) | "playing" |
//                      "blocked" (no click yet) | "ended" | "hushed"
//   speaker.answer, speaker.seq   the current answer and its last sentence started
//   speaker.history    per answer: sentence times on the AudioContext clock (receivedAt,
//                      when, duration, reportedAt, endedAt) and, when stopped, hushAt and
//                      stoppedAt (performance.now(): the last sounding source's "ended").
// onChange() is called on every change of state or sentence. The newest player is also
// window.__voicenbSpeaker, so a test can wait for states instead of sleeping.
function createSpeaker(model, { onChange = () => {}, voiceRms = VOICE_RMS } = {}) {
  let ctx = null;
  let current = null; // the answer being spoken (its private record)
  const over = new Set(); // answers hushed or replaced: their late messages are ignored
  let loud = 0; // microphone chunks in a row over the threshold
  let timer = null; // fires when the next scheduled sentence starts
  const speaker = { state: "idle", answer: null, seq: null, history: [], sent: [] };

  function changed(state) {
    if (state) speaker.state = state;
    onChange();
  }

  function send(message) {
    speaker.sent.push({ ...message, at: performance.now() });
    if (speaker.sent.length > 10 * SPEAKER_KEEP) speaker.sent.shift();
    model.send(message);
  }

  function context() {
    if (!ctx) {
      ctx = new AudioContext({ latencyHint: "interactive" });
      // A click (or the browser) starting the clock lets waiting sentences play.
      ctx.onstatechange = () => schedule();
    }
    return ctx;
  }

  function begin(id) {
    if (current && current.info.status === "speaking") stop(current, "replaced");
    const info = { id, status: "speaking", count: null, sentences: {}, hushAt: null,
                   stoppedAt: null, reason: null, played: null };
    current = { id, info, decoded: new Map(), next: 0, done: 0, end: 0, sources: [],
                gain: null, started: false };
    speaker.history.push(info);
    if (speaker.history.length > SPEAKER_KEEP) speaker.history.shift();
    speaker.answer = id;
    speaker.seq = null;
    loud = 0;
    changed("waiting");
  }

  function say({ answer, seq }, buffers) {
    if (over.has(answer) || !buffers || !buffers.length) return;
    if (!current || current.id !== answer) begin(answer);
    const a = current;
    if (seq < a.next || a.info.sentences[seq]) return; // a repeat
    const c = context();
    const info = { receivedAt: c.currentTime };
    a.info.sentences[seq] = info;
    c.decodeAudioData(speakerBytes(buffers[0])).then(
      (audio) => a.decoded.set(seq, audio),
      (err) => {
        // Skipped, so that the sentences after it and "ended" still come.
        a.decoded.set(seq, null);
        info.failed = true;
        send({ type: "speak-error", answer, seq,
               message: String((err && err.message) || err) });
      },
    ).then(() => schedule());
  }

  // Start every sentence that is decoded and next in order, each where the previous ends.
  function schedule() {
    const a = current;
    if (!a || a.info.status !== "speaking" || !ctx) return;
    if (ctx.state !== "running") {
      if (a.decoded.size) changed("blocked");
      return;
    }
    while (a.decoded.has(a.next)) {
      const seq = a.next++;
      const audio = a.decoded.get(seq);
      a.decoded.delete(seq);
      if (!audio) {
        a.done++;
        continue;
      }
      if (!a.gain) {
        a.gain = ctx.createGain();
        a.gain.connect(ctx.destination);
      }
      const source = ctx.createBufferSource();
      source.buffer = audio;
      source.connect(a.gain);
      // Back to back with the previous sentence; a late one as soon as it can.
      const when = Math.max(ctx.currentTime + SPEAKER_LEAD, a.end);
      source.start(when);
      a.end = when + audio.duration;
      const info = Object.assign(a.info.sentences[seq], { when, duration: audio.duration });
      source.onended = () => {
        info.endedAt = ctx.currentTime;
        source.disconnect();
        if (a.info.status !== "speaking") return;
        a.done++;
        report(); // the next sentence starts right now: say so even if its timer is late
        finish(a);
      };
      a.sources.push({ source, seq, info });
    }
    report();
    finish(a);
  }

  // Send "playing" for each sentence whose start time the AudioContext clock has reached, and
  // wake up at the next one's. (onended of the previous sentence calls this too, for tabs in
  // the background, where timers are slowed to once a second.)
  function report() {
    clearTimeout(timer);
    timer = null;
    const a = current;
    if (!a || a.info.status !== "speaking" || !ctx) return;
    let next = Infinity;
    for (const { seq, info } of a.sources) {
      if (info.reportedAt !== undefined) continue;
      if (info.when <= ctx.currentTime + 0.002) {
        info.reportedAt = ctx.currentTime;
        a.started = true;
        speaker.seq = seq;
        send({ type: "playing", answer: a.id, seq });
        changed();
      } else {
        next = Math.min(next, info.when);
      }
    }
    // A suspended clock does not move: wait for its statechange instead of spinning.
    if (next < Infinity && ctx.state === "running") {
      timer = setTimeout(report, Math.max(0, (next - ctx.currentTime) * 1000));
    }
  }

  function finish(a) {
    if (a.info.status !== "speaking") return;
    const sounding = a.sources.some(({ info }) => info.endedAt === undefined);
    if (sounding) return changed("playing");
    if (a.info.count === null || a.next < a.info.count || a.done < a.info.count) {
      return changed(ctx && ctx.state !== "running" && a.decoded.size ? "blocked" : "waiting");
    }
    a.info.status = "ended";
    a.info.played = playedUntil(a, Infinity);
    if (a.gain) a.gain.disconnect();
    send({ type: "ended", answer: a.id, played: a.info.played });
    changed("ended");
  }

  function playedUntil(a, cut) {
    const played = {};
    for (const { seq, info } of a.sources) {
      if (info.when >= cut) continue;
      const seconds = info.endedAt !== undefined ? info.duration
        : Math.min(info.duration, cut - info.when);
      played[String(seq)] = Math.round(seconds * 1000) / 1000;
    }
    return played;
  }

  // Silence answer a now. The sounding source fades out over SPEAKER_FADE and stops; the
  // sentences scheduled after it are disconnected at once (stopping a source before its start
  // time would only end it, and fire "ended", at that start time).
  function stop(a, reason, quiet = false) {
    const info = a.info;
    info.hushAt = performance.now();
    clearTimeout(timer);
    timer = null;
    info.status = "hushed";
    info.reason = reason;
    over.add(a.id);
    loud = 0;
    const running = ctx && ctx.state === "running";
    const now = ctx ? ctx.currentTime : 0;
    const cut = now + SPEAKER_FADE;
    if (a.gain) {
      a.gain.gain.setValueAtTime(1, now);
      a.gain.gain.linearRampToValueAtTime(0, cut);
    }
    let sounding = 0;
    for (const { source, info: s } of a.sources) {
      if (s.endedAt !== undefined) continue;
      if (running && s.when < cut) {
        sounding++;
        source.onended = () => {
          s.endedAt = ctx.currentTime;
          source.disconnect();
          if (--sounding === 0) {
            info.stoppedAt = performance.now();
            changed();
          }
        };
        source.stop(cut);
      } else {
        source.onended = null;
        source.stop();
        source.disconnect();
      }
    }
    if (!sounding) info.stoppedAt = performance.now();
    info.played = playedUntil(a, cut);
    if (!quiet) send({ type: "hushed", answer: a.id, played: info.played, reason });
    if (a === current) changed("hushed");
  }

  function onMessage(content, buffers) {
    if (!content) return;
    if (content.type === "say") {
      say(content, buffers);
    } else if (content.type === "said") {
      if (over.has(content.answer)) return;
      if (!current || current.id !== content.answer) begin(content.answer);
      current.info.count = content.count;
      schedule();
    } else if (content.type === "hush") {
      speaker.hush(content.answer);
    }
  }

  speaker.hush = (answer = null) => {
    const a = current;
    if (answer !== null && answer !== undefined && (!a || a.id !== answer)) {
      over.add(answer); // hushed before its first sentence came: never play it
      send({ type: "hushed", answer, played: {}, reason: "kernel" });
    } else if (a && a.info.status === "speaking") {
      stop(a, "kernel");
    } else {
      send({ type: "hushed", answer: a ? a.id : null, played: a ? a.info.played || {} : {},
             reason: "kernel" });
    }
  };

  speaker.hear = (pcm) => {
    const a = current;
    // Only once the answer is heard: speech before that is the end of the person's own turn.
    if (!a || a.info.status !== "speaking" || !a.started) {
      loud = 0;
      return false;
    }
    loud = chunkRms(pcm) >= voiceRms ? loud + 1 : 0;
    if (loud < VOICE_CHUNKS) return false;
    stop(a, "voice");
    return true;
  };

  speaker.unlock = () => {
    const c = context();
    // Safari unlocks output only when a sound is started inside the gesture: one silent sample.
    const blank = c.createBufferSource();
    blank.buffer = c.createBuffer(1, 1, c.sampleRate);
    blank.connect(c.destination);
    blank.start();
    return c.state === "running" ? Promise.resolve() : c.resume();
  };

  speaker.close = () => {
    model.off("msg:custom", onMessage);
    // Not a barge-in: the kernel stops waiting for this view and counts what it started.
    send({ type: "closed", answer: current ? current.id : null });
    if (current && current.info.status === "speaking") stop(current, "closed", true);
    if (ctx) ctx.close();
    ctx = null;
  };

  // The AudioContext clock, for measuring (0 before any audio).
  speaker.clock = () => (ctx ? ctx.currentTime : 0);

  model.on("msg:custom", onMessage);
  window.__voicenbSpeaker = speaker;
  return speaker;
}
