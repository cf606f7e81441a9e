"""coach.speech against the real engine (espeak-ng through pyttsx3); no fakes of pyttsx3."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from coach import speech, speech_pyttsx3, speech_pyttsx3_worker
from coach.errors import SpeechError
from coach.speech import SpeechCache, SpeechSettings, Synthesizer, Voice, list_voices
from coach.units import RATE, to_samples

EN = SpeechSettings(voice="gmw/en", rate=175)

SENTENCES = [
    "Rest both hands on the shoulders.",
    "Slide your palms slowly down the back.",
    "Press gently with your thumbs.",
    "Breathe out as you lean in.",
    "Circle the shoulder blades three times.",
    "Keep the pressure steady and even.",
    "Move up towards the neck.",
    "Ease off and let the hands rest.",
    "Knead the upper arms with both hands.",
    "Finish with long, light strokes.",
]

WORDS = [
    "gently",
    "press",
    "your",
    "thumbs",
    "along",
    "the",
    "muscle",
    "and",
    "breathe",
    "slowly",
    "while",
    "keeping",
    "steady",
    "even",
    "pressure",
    "on",
    "upper",
    "back",
]


def _cues(n: int) -> list[str]:
    """n distinct cues of 2 to 12 words."""
    rng = random.Random(1)
    out: dict[str, None] = {}
    while len(out) < n:
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 12))]
        out[" ".join(words).capitalize() + "."] = None
    return list(out)


def _child_pids() -> set[int]:
    """Live child processes of this process (Linux /proc), besides multiprocessing's view."""
    pids = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == me and fields[0] != "Z":
                pids.add(int(entry.name))
    return pids


def _assert_no_workers_left(before: set[int]) -> None:
    assert multiprocessing.active_children() == []
    if sys.platform.startswith("linux"):
        assert _child_pids() <= before


@pytest.fixture
def cache(tmp_path: Path) -> SpeechCache:
    return SpeechCache(tmp_path / "speech")


# ----------------------------------------------------------------- without the engine


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert speech.default_cache_dir() == tmp_path / "coach" / "speech"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert speech.default_cache_dir() == Path.home() / ".cache" / "coach" / "speech"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert speech.default_cache_dir() == Path.home() / ".cache" / "coach" / "speech"


def test_key_holds_the_espeak_ng_version(cache: SpeechCache, monkeypatch) -> None:
    if speech_pyttsx3.driver_name() != "espeak":
        pytest.skip("espeak-ng is the driver on Linux only")
    assert speech_pyttsx3.engine_version("espeak").startswith("espeak-ng 1.")
    before = cache.path("Hello.", EN)
    monkeypatch.setattr(speech_pyttsx3, "engine_version", lambda driver: "espeak-ng 9.99")
    # A cache asks the engine for its identity once (the version does not change
    # within a run): the next run, a new SpeechCache, sees the new version.
    assert SpeechCache(cache.directory).path("Hello.", EN) != before


def test_key_depends_on_voice_rate_and_text(cache: SpeechCache) -> None:
    paths = {
        cache.path("Hello.", EN),
        cache.path("Hello.", SpeechSettings("gmw/en-us", 175)),
        cache.path("Hello.", SpeechSettings("gmw/en", 176)),
        cache.path("Hello!", EN),
    }
    assert len(paths) == 4
    p = cache.path("Hello.", EN)
    assert p.parent.name == p.stem[:2] and p.suffix == ".wav"
    assert p == cache.path("Hello.", SpeechSettings("gmw/en", 175))


def test_missing_clip(cache: SpeechCache) -> None:
    assert cache.length("never said", EN) is None
    with pytest.raises(KeyError):
        cache.load("never said", EN)
    with pytest.raises(SpeechError, match="never said"):
        cache.load("never said", EN)


def test_first_good_stored_clip_wins(cache: SpeechCache) -> None:
    # Two processes filling the cache at once: the second must not change the length the
    # first one already reported.
    first = cache._store("Hi.", EN, np.zeros(1000, dtype=np.int16))
    second = cache._store("Hi.", EN, np.ones(2000, dtype=np.int16))
    assert first == second == 1000 == len(cache.load("Hi.", EN))
    assert [p.name for p in cache.directory.rglob("*") if p.is_file()] == [
        cache.path("Hi.", EN).name
    ]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":  # the header still promises every sample
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "garbled":  # same length, valid header, other samples
        path.write_bytes(data[:-100] + bytes(100))
    elif how == "foreign":  # a plain WAV with no checksum, as older versions wrote
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(2000))


@pytest.mark.parametrize("how", ["truncated", "emptied", "garbled", "foreign"])
def test_a_damaged_entry_is_a_miss_and_storing_replaces_it(cache: SpeechCache, how: str) -> None:
    good = (np.arange(3000) % 200 - 100).astype(np.int16)
    cache._store("Hi.", EN, good)
    path = cache.path("Hi.", EN)
    assert cache.length("Hi.", EN) == 3000
    _damage(path, how)
    fresh = SpeechCache(cache.directory)  # another run: nothing remembered
    assert fresh.length("Hi.", EN) is None
    assert cache.length("Hi.", EN) is None  # changed on disk: checked again
    with pytest.raises(KeyError):
        fresh.load("Hi.", EN)
    assert fresh._store("Hi.", EN, good) == 3000
    assert np.array_equal(fresh.load("Hi.", EN), good / np.float32(32768))
    assert SpeechCache(cache.directory).length("Hi.", EN) == 3000
    assert sorted(p.name for p in cache.directory.rglob("*") if p.is_file()) == [path.name]


@pytest.mark.tts
def test_synthesis_heals_a_truncated_clip(cache: SpeechCache) -> None:
    text = SENTENCES[1]
    first = Synthesizer(cache).ensure([text], EN)[text]
    _damage(cache.path(text, EN), "truncated")
    synth = Synthesizer(SpeechCache(cache.directory))
    again = synth.ensure([text], EN)[text]
    assert synth.synthesized == 1
    assert abs(again - first) < to_samples(0.05)
    assert len(SpeechCache(cache.directory).load(text, EN)) == again


def test_entries_are_wav_files_other_readers_can_read(cache: SpeechCache) -> None:
    cache._store("Hi.", EN, np.full(500, 1000, dtype=np.int16))
    with wave.open(str(cache.path("Hi.", EN)), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        assert w.getnframes() == 500


def test_the_lexicon_respells_whole_words_in_any_case() -> None:
    s = SpeechSettings("gmw/en", 150, lexicon=(("supraspinatus", "soopra-spy-naytus"),))
    assert s.spoken("Supraspinatus and supraspinatus.") == (
        "Soopra-spy-naytus and soopra-spy-naytus."
    )
    assert s.spoken("supraspinatuses") == "supraspinatuses"
    assert SpeechSettings("gmw/en", 150).spoken("supraspinatus") == "supraspinatus"


def test_stale_temporaries_of_our_naming_are_swept(cache: SpeechCache) -> None:
    cache.directory.mkdir(parents=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    hexes = "0123456789abcdef" * 2
    stale = [
        f".raw-{dead}-{hexes}-3.wav",
        f".tmp-{dead}-{hexes}.wav",
        f".raw-{hexes}-0.wav",  # the older naming, without a pid: swept once old
    ]
    live = [f".raw-{os.getpid()}-{hexes}-1.wav", "notes.wav", ".raw-mine.wav"]
    for name in stale + live:
        (cache.directory / name).write_bytes(b"x")
    old = time.time() - 3600
    os.utime(cache.directory / stale[2], (old, old))
    assert cache.sweep() == 3
    assert sorted(p.name for p in cache.directory.iterdir()) == sorted(live)


def test_a_cache_folder_that_cannot_be_made_is_named_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    synth = Synthesizer(SpeechCache(blocker / "speech"))
    start = time.perf_counter()
    with pytest.raises(SpeechError) as caught:
        synth.ensure(["Hello."], EN)
    assert time.perf_counter() - start < 1.0
    assert str(blocker / "speech") in str(caught.value)
    assert "cannot be made" in str(caught.value) and "XDG_CACHE_HOME" in str(caught.value)


@pytest.fixture
def full_folder(tmp_path: Path):
    """A tiny tmpfs, filled up (needs root: skipped elsewhere)."""
    where = tmp_path / "full"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (where / "coach" / "speech").mkdir(parents=True)
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
        os.close(fd)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_cache_folder_fails_at_once_with_its_name_and_exit_1(full_folder: Path) -> None:
    routine = full_folder.parent / "r.yaml"
    routine.write_text(
        "routine: 1\ntitle: T\nsteps:\n  - title: Rest\n    say: Rest your hands.\n    time: 9s\n"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "coach", "preview", str(routine), "--voice", "calm-en"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_CACHE_HOME": str(full_folder)},
    )
    assert time.perf_counter() - start < 10
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"the speech cache folder {full_folder / 'coach' / 'speech'} is full: free some "
        "space or fix its permissions, or set XDG_CACHE_HOME to a writable folder"
    ]


def test_silent_engine_output_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw.wav"
    with wave.open(str(raw), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\0\0" * 5000)
    with pytest.raises(SpeechError, match=r"no sound for '\.\.\.'"):
        speech.finish_clip(*speech_pyttsx3.read_wav(raw, "..."), "...")


def test_empty_text_is_an_error(cache: SpeechCache) -> None:
    with pytest.raises(SpeechError, match="empty"):
        Synthesizer(cache).ensure(["Fine.", "  "], EN)


def test_worker_count_grows_with_missing_work(cache: SpeechCache) -> None:
    auto = Synthesizer(cache)
    assert auto.worker_count(0) == 0
    assert auto.worker_count(1) == 1
    assert auto.worker_count(10) == 1
    assert 1 <= auto.worker_count(10_000) <= (os.cpu_count() or 1)
    assert Synthesizer(cache, workers=4).worker_count(3) == 3


# -------------------------------------------------------------------- with the engine


@pytest.mark.tts
def test_clip_is_cached_with_its_true_length(cache: SpeechCache) -> None:
    text = SENTENCES[0]
    lengths = Synthesizer(cache).ensure([text, text], EN)
    assert list(lengths) == [text]
    clip = cache.load(text, EN)
    assert clip.dtype == np.float32 and clip.ndim == 1
    assert lengths[text] == cache.length(text, EN) == len(clip)
    assert to_samples(0.8) < len(clip) < to_samples(4.0)
    with wave.open(str(cache.path(text, EN)), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
    assert not list(cache.directory.glob(".raw-*")), "engine temp files left behind"


@pytest.mark.tts
def test_cached_text_is_not_synthesized_again(cache: SpeechCache) -> None:
    synth = Synthesizer(cache)
    first = synth.ensure(SENTENCES[:3], EN)
    assert synth.synthesized == 3
    mtimes = [cache.path(t, EN).stat().st_mtime_ns for t in SENTENCES[:3]]
    calls: list[tuple[int, int]] = []
    start = time.perf_counter()
    again = Synthesizer(cache).ensure(SENTENCES[:3], EN, progress=lambda *a: calls.append(a))
    assert time.perf_counter() - start < 0.05  # no worker was started
    assert again == first
    assert calls == []
    assert [cache.path(t, EN).stat().st_mtime_ns for t in SENTENCES[:3]] == mtimes
    # Only the new text is made.
    synth.ensure([*SENTENCES[:3], SENTENCES[3]], EN)
    assert synth.synthesized == 4


@pytest.mark.tts
def test_length_lookup_is_fast(cache: SpeechCache) -> None:
    Synthesizer(cache).ensure(SENTENCES[:2], EN)
    start = time.perf_counter()
    for i in range(1000):
        assert cache.length(SENTENCES[i % 2], EN) is not None
    assert time.perf_counter() - start < 0.2


def _ratios(slow: dict[str, int], fast: dict[str, int]) -> list[float]:
    return [slow[t] / fast[t] for t in slow]


@pytest.mark.tts
def test_rate_is_honoured_by_fresh_workers(cache: SpeechCache) -> None:
    # "A lost rate" (docs/speech-engines.md) on a new engine: each ensure call starts new
    # workers that set the rate once.
    texts = SENTENCES
    slow = Synthesizer(cache, workers=2).ensure(texts, SpeechSettings("gmw/en", 120))
    fast = Synthesizer(cache, workers=2).ensure(texts, SpeechSettings("gmw/en", 240))
    ratios = _ratios(slow, fast)
    assert all(1.6 <= r <= 2.4 for r in ratios), ratios


@pytest.mark.tts
def test_rate_is_honoured_when_it_changes_in_one_engine(tmp_path: Path) -> None:
    # "A lost rate" in a long-lived engine: one worker, 20 jobs alternating 120 and 240
    # wpm. The public API keeps one rate per ensure call, so this drives the worker
    # protocol itself.
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    worker = ctx.Process(
        target=speech_pyttsx3_worker.worker_main, args=(child, "espeak", 30.0), daemon=True
    )
    worker.start()
    child.close()
    lengths: dict[tuple[str, int], int] = {}
    try:
        for i, (text, rate) in enumerate((t, r) for t in SENTENCES for r in (120, 240)):
            raw = tmp_path / f"{i}.wav"
            parent.send((i, text, "gmw/en", rate, str(raw)))
            assert parent.recv() == ("done", i)
            lengths[text, rate] = len(
                speech.finish_clip(*speech_pyttsx3.read_wav(raw, text), text)[0]
            )
        parent.send(None)
        worker.join(5)
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join()
    ratios = [lengths[t, 120] / lengths[t, 240] for t in SENTENCES]
    assert all(1.6 <= r <= 2.4 for r in ratios), ratios


@pytest.mark.tts
def test_many_texts_with_two_workers(cache: SpeechCache) -> None:
    texts = _cues(60)
    assert len(set(texts)) == 60
    calls: list[tuple[int, int]] = []
    synth = Synthesizer(cache, workers=2)
    lengths = synth.ensure(texts, EN, progress=lambda done, total: calls.append((done, total)))
    assert list(lengths) == texts
    assert synth.synthesized == 60
    assert calls == [(i, 60) for i in range(61)]
    per_word = np.array([lengths[t] / len(t.split()) for t in texts]) / RATE
    median = float(np.median(per_word))
    assert 0.2 < median < 0.6, median  # seconds a word at 175 wpm, with the fixed margins
    # Roughly proportional to word count: no clip far off the median rate.
    assert np.all((per_word > median / 2) & (per_word < median * 2)), per_word
    for t in texts:
        assert cache.length(t, EN) == lengths[t]


@pytest.mark.tts
def test_clips_are_trimmed_and_do_not_click(cache: SpeechCache) -> None:
    Synthesizer(cache).ensure(SENTENCES[:4], EN)
    for text in SENTENCES[:4]:
        clip = cache.load(text, EN)
        assert abs(clip[0]) < 1e-3 and abs(clip[-1]) < 1e-3
        # Edges ramp in: no jump of more than a few LSB in the first and last samples.
        assert np.max(np.abs(clip[:24])) < 0.01 and np.max(np.abs(clip[-24:])) < 0.01
        loud = np.flatnonzero(np.abs(clip) > speech.SILENCE)
        lead = loud[0] / RATE
        tail = (len(clip) - 1 - loud[-1]) / RATE
        assert 0.003 <= lead <= 0.020, lead
        assert 0.040 <= tail <= 0.080, tail
        assert np.max(np.abs(clip)) > 0.1  # it does hold speech


@pytest.mark.tts
def test_list_voices() -> None:
    voices = list_voices()
    assert all(isinstance(v, Voice) for v in voices)
    en = [v for v in voices if v.id == "gmw/en"]
    assert len(en) == 1
    assert isinstance(en[0].languages, tuple) and en[0].name


@pytest.mark.tts
def test_unknown_voice_is_an_error(cache: SpeechCache) -> None:
    before = _child_pids() if sys.platform.startswith("linux") else set()
    with pytest.raises(SpeechError, match="no/such-voice"):
        Synthesizer(cache).ensure(["Hello."], SpeechSettings("no/such-voice", 175))
    assert cache.length("Hello.", SpeechSettings("no/such-voice", 175)) is None
    _assert_no_workers_left(before)


@pytest.mark.tts
def test_timeout_terminates_workers(cache: SpeechCache) -> None:
    before = _child_pids() if sys.platform.startswith("linux") else set()
    long_text = " ".join(SENTENCES * 5)
    synth = Synthesizer(cache, workers=2, timeout=0.001)
    start = time.perf_counter()
    with pytest.raises(SpeechError, match="took over") as caught:
        synth.ensure([long_text, SENTENCES[0]], EN)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in str(caught.value)
    _assert_no_workers_left(before)
    assert not list(cache.directory.rglob("*.wav")), "no clip or temp file may be left"


def test_module_import_is_light() -> None:
    code = (
        "import sys, coach.speech; "
        "print(any(m in sys.modules for m in ('numpy', 'soxr', 'pyttsx3')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert out.stdout.strip() == "False"


def _spawned_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid and b"spawn_main" in cmd:
                found.append(int(entry.name))
    return found


@pytest.mark.tts
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_workers_start_prints_no_traceback(tmp_path: Path) -> None:
    import signal

    routine = tmp_path / "r.yaml"
    steps = "".join(
        f"  - title: Step {i}\n    say: {s}\n    time: 20s\n" for i, s in enumerate(SENTENCES)
    )
    routine.write_text(f"routine: 1\ntitle: T\nsteps:\n{steps}")
    for attempt in range(3):
        cache = tmp_path / f"cache{attempt}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "coach", "preview", str(routine), "--voice", "calm-en"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "XDG_CACHE_HOME": str(cache)},
            cwd=Path(__file__).parents[1],
        )
        deadline = time.monotonic() + 20
        while not _spawned_children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.01 * attempt)  # at once, and a little later in the worker's start-up
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err
        assert proc.returncode == 130 and err.strip() == "coach: interrupted", err
        assert not list(cache.rglob(".raw-*")), "engine temp files left behind"


@pytest.mark.tts
def test_a_failure_on_a_very_long_cue_blames_its_length(cache: SpeechCache) -> None:
    # Long enough, and the time short enough, to time out on a fast machine too (600
    # words were spoken within 0.5 s on one).
    long_text = " ".join(["Breathe slowly and let your hands rest on the back."] * 100)
    with pytest.raises(SpeechError) as caught:
        Synthesizer(cache, timeout=0.2).ensure([long_text], EN)
    message = str(caught.value)
    assert "1000 words, too long to speak in one go: split it" in message, message
    assert "espeak-ng -w" not in message and "\n" not in message


@pytest.mark.tts
def test_a_clips_loudness_summary_is_kept_beside_it_and_remade_when_stale(
    cache: SpeechCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coach import loudness

    text = SENTENCES[1]
    Synthesizer(cache).ensure([text], EN)
    side = cache.path(text, EN).with_suffix(speech.SUMMARY_SUFFIX)
    assert side.is_file()
    # Kept when the clip was made (from the levelling's measurement): not loaded for it.
    monkeypatch.setattr(SpeechCache, "load", lambda *a: pytest.fail("loaded again"))
    kept = cache.summary(text, EN)
    monkeypatch.undo()
    made = loudness.summarize(cache.load(text, EN))  # the clip measured afresh
    assert kept.length == made.length == len(cache.load(text, EN))
    assert np.array_equal(kept.peaks, made.peaks) and len(kept.curve) == len(made.curve)
    assert abs(10 * np.log10(kept.curve[-1] / made.curve[-1])) < 0.1
    # A damaged summary is made again from the clip, and so is one whose clip has
    # changed since.
    side.write_bytes(b"garbage")
    assert np.array_equal(cache.summary(text, EN).curve, made.curve)
    monkeypatch.setattr(SpeechCache, "load", lambda *a: pytest.fail("loaded again"))
    assert np.array_equal(cache.summary(text, EN).curve, made.curve)  # and kept
    monkeypatch.undo()
    side.write_bytes(side.read_bytes()[:-4])  # truncated
    assert np.array_equal(cache.summary(text, EN).peaks, made.peaks)
    clip = cache.path(text, EN)
    os.utime(clip, ns=(0, 0))
    assert np.array_equal(cache.summary(text, EN).curve, made.curve)
    _, version, size, mtime_ns, ctime_ns, ino, frames, _, _ = speech._SUMMARY.unpack_from(
        side.read_bytes()
    )
    # Remade for the clip as it is now.
    st = clip.stat()
    assert (version, size, mtime_ns, ctime_ns, ino, frames) == (
        speech.SUMMARY_VERSION,
        st.st_size,
        0,
        st.st_ctime_ns,
        st.st_ino,
        made.length,
    )


@pytest.mark.tts
def test_a_sessions_level_from_the_summaries_kept_at_synthesis_is_as_measured_from_its_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summaries a cold render keeps (from each clip's levelling) and those measured
    from the clips afresh give a built-in session the same level, within 0.05 dB."""
    from coach.mixer import SoundBank, session_gain
    from coach.session import Options, prepare

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gains = []
    for fresh in (False, True):
        if fresh:
            for side in (tmp_path / "cache").rglob("*" + speech.SUMMARY_SUFFIX):
                side.unlink()
        prepared = prepare("upper-back-basics", Options(voice="calm-en"))
        bank = SoundBank(prepared.clips(), channels=2, volume=prepared.pack.volume)
        gains.append(session_gain(prepared.timeline, bank))
    assert list((tmp_path / "cache").rglob("*" + speech.SUMMARY_SUFFIX))  # remade
    assert abs(20 * np.log10(gains[0] / gains[1])) < 0.05, gains


def test_a_later_run_trusts_a_clip_its_summary_saw_checked_and_checks_a_changed_one(
    cache: SpeechCache, monkeypatch
) -> None:
    good = (np.arange(3000) % 200 - 100).astype(np.int16)
    cache._store("Hi.", EN, good)
    cache.summary("Hi.", EN)
    path = cache.path("Hi.", EN)
    # Unchanged since it was checked: its length from the summary, the clip not read.
    real = speech._read_reused
    monkeypatch.setattr(speech, "_read_reused", lambda p: pytest.fail(f"read {p}"))
    assert SpeechCache(cache.directory).length("Hi.", EN) == 3000
    monkeypatch.setattr(speech, "_read_reused", real)
    # Garbled in place with its modification time put back: its change time tells.
    st = path.stat()
    _damage(path, "garbled")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    assert SpeechCache(cache.directory).length("Hi.", EN) is None


def test_lengths_checks_many_entries_at_once_as_length_does_one(cache: SpeechCache) -> None:
    texts = [f"Cue {i}." for i in range(12)]
    for i, text in enumerate(texts):
        cache._store(text, EN, np.full(1000 + i, i, dtype=np.int16))
    _damage(cache.path(texts[3], EN), "garbled")
    _damage(cache.path(texts[7], EN), "truncated")
    fresh = SpeechCache(cache.directory)
    want = [None if i in (3, 7) else 1000 + i for i in range(12)]
    assert fresh.lengths([*texts, "Not stored."], EN) == [*want, None]
    assert [SpeechCache(cache.directory).length(t, EN) for t in texts] == want
    assert np.array_equal(fresh.load(texts[5], EN), np.full(1005, 5 / 32768, np.float32))


class _Scripted:
    """An engine for the Synthesizer's own logic: a tone for each text, silence for the
    texts in `silent` (the engine works; what it made is not speech)."""

    def __init__(self, silent: tuple[str, ...] = ()) -> None:
        self.silent = set(silent)
        self.spoken: list[str] = []

    def identity(self, settings: SpeechSettings) -> tuple[str, ...]:
        return ("scripted",)

    def synthesize(self, texts, settings, deliver, *, scratch, workers=None, timeout=30.0):
        for i, text in enumerate(texts):
            self.spoken.append(text)
            n = 11_025 + 500 * i
            tone = (0.3 * np.sin(np.arange(n) * 0.2)).astype(np.float32)
            deliver(text, np.zeros(n, np.float32) if text in self.silent else tone, 22_050)


def test_clips_finished_beside_the_engine_are_all_stored_and_counted(cache, monkeypatch):
    fake = _Scripted()
    monkeypatch.setattr(speech, "engine", lambda settings: fake)
    texts = [f"Cue number {i}." for i in range(12)]
    seen: list[tuple[int, int]] = []
    synth = Synthesizer(cache)
    lengths = synth.ensure(texts, EN, progress=lambda done, total: seen.append((done, total)))
    assert list(lengths) == texts and synth.synthesized == 12
    assert [SpeechCache(cache.directory).length(t, EN) for t in texts] == list(lengths.values())
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 13


def test_a_clip_that_cannot_be_finished_fails_the_synthesis_and_is_not_stored(cache, monkeypatch):
    fake = _Scripted(silent=("Cue number 1.",))
    monkeypatch.setattr(speech, "engine", lambda settings: fake)
    texts = [f"Cue number {i}." for i in range(12)]
    with pytest.raises(SpeechError, match=r"no sound for 'Cue number 1\.'"):
        Synthesizer(cache).ensure(texts, EN)
    assert cache.length("Cue number 1.", EN) is None
    assert cache.length("Cue number 0.", EN) is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_blocks_freed_while_clips_are_made_are_reused_not_faulted_in_again() -> None:
    # Arrays of 1 to 3.5 MB, each freed before the next and often larger than the last,
    # as a clip's are: fresh pages most times by default (glibc's threshold for mmap
    # follows the last block freed), the same heap memory once coach.malloc keeps it.
    probe = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        from coach import malloc
        if sys.argv[1] == "reuse":
            malloc.reuse_large_blocks()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for k in range(60):
            np.ones((1 << 17) + (k % 7) * 40_000 + k * 3000)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """
    )

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    plain, reused = faults("default"), faults("reuse")
    assert plain > 5000  # measured: 10,474
    assert reused < plain / 4, (plain, reused)  # measured: 1,042
