"""``mergevq`` console script: bad input ends with one clear line on stderr and exit status 2 (``--debug`` shows the
traceback); every option of ``generate`` / ``reconstruct`` documents its default."""

from __future__ import annotations

import argparse

import pytest

from mergevq_hf import cli


@pytest.fixture(autouse=True)
def _no_loading_bars():
    """transformers draws a "Loading weights" bar on stderr; keep stderr to what the CLI itself prints."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    yield
    if enabled:
        logging.enable_progress_bar()


def _run_expecting_usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["generate", "--class-id", "3", "-k", "0"], "num_tokens=0 is out of range; allowed: None"),
        (["generate", "--class-id", "3", "-k", "100000"], "num_tokens=100000 is out of range"),
        (["generate", "--class-name", "cat"], "unknown class name 'cat'"),
        (["generate", "--class-id", "10"], "class id 10 is out of range; allowed 0..9"),
        (["generate"], "give at least one --class-id or --class-name"),
        (["generate", "--class-id", "1", "--guidance-scale", "nan"], "guidance_scale=nan"),
        (["generate", "--class-id", "1", "--top-p", "0"], "top_p=0.0"),
        (["generate", "--class-id", "1", "--scale", "0"], "--scale 0"),
        (["generate", "--class-id", "1", "--num-inference-steps", "4"], "num_inference_steps=4: a raster generator"),
        (["generate", "--class-id", "1", "--default", "random-ar", "--num-inference-steps", "99"], "num_inference_st"),
        (["generate", "--class-id", "1", "--default", "mergear", "--model", "x"], "either --model or --default"),
        (["generate", "--class-id", "1", "--model", "{tmp}/no-such-pipeline"], "no-such-pipeline' was not found"),
        (["reconstruct", "{tmp}/no-such-image.png"], "image '.*no-such-image.png' was not found"),
        (["reconstruct", "{tmp}/not-an-image.png"], "cannot read image '.*not-an-image.png'"),
        (["reconstruct", "-k", "0"], "num_tokens=0 is out of range"),
        (["reconstruct", "-k", "100000"], "num_tokens=100000 is out of range"),
        (["reconstruct", "--model", "./no-such-tokenizer"], "local path './no-such-tokenizer' was not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, match, tmp_path, capsys, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-an-image.png").write_text("this is not a PNG")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--output", str(tmp_path / "out.png")]
    line = _run_expecting_usage_error(argv, capsys)
    assert line.startswith(f"mergevq {argv[0]}: error: "), line
    assert re.search(match, line), line
    assert not (tmp_path / "out.png").exists()


def test_debug_reraises_the_original_exception(tmp_path):
    with pytest.raises(ValueError, match="num_tokens=0 is out of range"):
        cli.main(["--debug", "generate", "--class-id", "3", "-k", "0", "--output", str(tmp_path / "x.png")])
    with pytest.raises(FileNotFoundError, match="was not found"):
        cli.main(["--debug", "reconstruct", str(tmp_path / "missing.png"), "--output", str(tmp_path / "x.png")])
    with pytest.raises(OSError, match="cannot read image"):
        (tmp_path / "bad.png").write_bytes(b"\x00" * 16)
        cli.main(["--debug", "reconstruct", str(tmp_path / "bad.png"), "--output", str(tmp_path / "x.png")])


def test_other_exceptions_propagate(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(cli, "_generate", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["generate", "--class-id", "1"])


def test_every_generate_and_reconstruct_option_states_its_default():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("generate", "reconstruct"):
        for action in subparsers.choices[command]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "default" in action.help, (command, action.dest, action.help)
    debug = next(a for a in parser._actions if "--debug" in a.option_strings)
    assert "default" in debug.help
