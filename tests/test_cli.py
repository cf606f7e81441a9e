"""The command line as a user meets it: exit codes, one-line errors, the documented output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROUTINE = """\
routine: 1
title: Tiny
steps:
  - title: Warm the oil
    say: Rub your hands together.
    time: 20s
  - title: Circles
    say: Circles on the {side} side.
    time: 30s
    sides: [right, left]
    tips:
      - after: 12s
        say: Change direction.
    countdown: 5s
"""


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(ROUTINE)
    return str(path)


def test_list_shows_the_built_in_routines_and_the_default_pack(run_cli):
    code, out, _ = run_cli("list")
    assert code == 0
    assert "upper-back-basics" in out and "upper-back-fist-rocking" in out
    assert "calm-en" in out and "the default" in out


def test_validate_passes_good_files_and_exits_0(run_cli, tiny):
    code, out, err = run_cli("validate", tiny, "upper-back-basics")
    assert (code, err) == (0, "")
    assert out.count("ok: ") == 2


def test_validate_reports_each_bad_file_in_one_line_and_exits_2(run_cli, tiny, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ROUTINE.replace("time: 30s", "time: 2 minuts"))
    code, out, err = run_cli("validate", tiny, str(bad))
    assert code == 2
    assert err == f'{bad}:9:11: steps[1].time: "2 minuts" is not a duration (try 90s, 1m30s, 2m)\n'
    assert out.count("ok: ") == 1


def test_validate_checks_the_voice_pack_a_routine_names(run_cli, tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(ROUTINE.replace("title: Tiny\n", "title: Tiny\nvoice: nobody\n"))
    code, _, err = run_cli("validate", str(path))
    assert code == 2
    assert err.startswith(f"{path}:3:8: voice: no voice pack named 'nobody'")


def test_an_unknown_routine_name_is_a_usage_error(run_cli):
    code, _, err = run_cli("preview", "upper-back-nothing")
    assert code == 2
    assert "no built-in routine named 'upper-back-nothing'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pace", "fast"], "'fast' is not a pace"),
        (["--length", "soon"], "'soon' is not a duration"),
        (["--rate", "9000"], "'9000' is not a speech rate"),
        (["--countdown", "x"], "'x' is not a number of seconds"),
        (["--voice", "nobody"], "no voice pack named 'nobody'"),
        (["--pace", "slow", "--length", "20m"], "use --pace or --length, not both"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(run_cli, tiny, args, message):
    code, _, err = run_cli("preview", tiny, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_the_module_runs_as_a_program_and_help_needs_no_audio_stack():
    code = (
        "import sys, runpy; sys.argv = ['coach', '--help']\n"
        "try: runpy.run_module('coach', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('pyttsx3', 'numpy', 'soxr', 'sounddevice') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "preview" in out.stdout and "HEAVY []" in out.stdout


@pytest.mark.tts
def test_preview_json_has_the_documented_shape(run_cli, tiny):
    code, out, _ = run_cli("preview", tiny, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["title"] == "Tiny"
    assert isinstance(data["total"], float) and data["total"] > 20 + 30 + 30
    kinds = {e["kind"] for e in data["events"]}
    assert kinds == {"speech", "chime"}
    for e in data["events"]:
        assert set(e) == {"kind", "start", "end", "step", "side", "text"}
        assert 0 <= e["start"] < e["end"] <= data["total"]
    said = [e["text"] for e in data["events"] if e["kind"] == "speech"]
    assert "Circles on the right side." in said and "Circles on the left side." in said
    assert [e["side"] for e in data["events"] if e["text"] == "Change direction."] == [
        "right",
        "left",
    ]


@pytest.mark.tts
def test_preview_table_shows_times_steps_sides_total_and_warnings(run_cli, tiny, tmp_path):
    code, out, _ = run_cli("preview", tiny)
    assert code == 0
    assert "Tiny" in out and "pace normal (1.00x)" in out and "total " in out
    assert '"Circles on the left side."' in out
    assert "warning" not in out
    cramped = tmp_path / "cramped.yaml"
    cramped.write_text(ROUTINE.replace("time: 20s", "time: 2s"))
    code, out, _ = run_cli("preview", str(cramped))
    assert code == 0
    assert 'warning: step 1 "Warm the oil" lengthened by' in out


@pytest.mark.tts
def test_pace_options_change_the_preview_as_the_spec_says(run_cli, tiny):
    def total(*args: str) -> float:
        code, out, err = run_cli("preview", tiny, "--json", *args)
        assert code == 0, err
        return json.loads(out)["total"]

    normal, slow, brisk = total(), total("--pace", "slow"), total("--pace", "brisk")
    assert brisk < normal < slow
    assert total("--length", "3m") == 180.0
    assert total("--rate", "300") < total("--rate", "100")
    assert total("--no-chimes") < normal
    from coach.voicepack import load_pack

    countdown = load_pack("calm-en").phrases.countdown.format(seconds="5")
    code, out, _ = run_cli("preview", tiny, "--json", "--countdown", "5")
    assert any(e["text"] == countdown for e in json.loads(out)["events"])
    code, out, _ = run_cli("preview", tiny, "--json", "--countdown", "0")
    assert all(e["text"] != countdown for e in json.loads(out)["events"])
    code, _, err = run_cli("preview", tiny, "--length", "10s")
    assert code == 2 and "shorter than the speech alone" in err


@pytest.mark.tts
def test_voices_lists_this_machines_voices(run_cli):
    code, out, _ = run_cli("voices")
    assert code == 0
    assert "gmw/en" in out
