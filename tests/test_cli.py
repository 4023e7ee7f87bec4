"""The command line: clear one-line errors with exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def spbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spbench.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["estimate", "--method", "lroa", "--backbone", "tiny-bert"], "Did you mean: lora"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bret"], "Did you mean: tiny-bert"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--batch-size", "0"], "impossible shape"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--seq-len", "100000"], "exceeds"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--set", "r"], "key=value"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--set", "rank=4"], "no hyperparameter 'rank'"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--fit", "lots"], "cannot read 'lots'"),
        (["estimate", "--method", "lora", "--backbone", "tiny-bert", "--dtype", "int3"], "unknown dtype"),
        (["report", "no-such-results.json"], "no such file"),  # raised in a library module, not cli.py
    ],
)
@pytest.mark.slow
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    proc = spbench(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_names_methods_and_backbones() -> None:
    proc = spbench("list", "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    names = {(r["kind"], r["name"]) for r in rows}
    assert ("method", "side_lora") in names and ("backbone", "roberta-large") in names


@pytest.mark.slow
def test_estimate_json_has_design_keys() -> None:
    proc = spbench("estimate", "--method", "side_lora", "--backbone", "tiny-bert", "--batch-size", "2",
                   "--seq-len", "16", "--set", "scope=targets", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["method"] == "side_lora" and info["method_config"]["scope"] == "targets"
    assert info["device"] == "predicted-cuda" and info["case_id"] == "side_lora-tiny-bert-b2-s16-scope=targets"
    for key in ("predicted_cuda_peak_bytes", "predicted_inference_peak_bytes", "mem_params_bytes",
                "params_total", "params_trainable", "params_backward_read", "flops_forward",
                "flops_backward", "schema_version"):
        assert key in info, key


@pytest.mark.slow
def test_fit_answers_the_largest_batch_that_fits(capsys: pytest.CaptureFixture[str]) -> None:
    """The budget is batch 5's peak: no power of two, so a search that only doubles (4) or
    overshoots (6) answers differently from the right one."""
    from spbench.cli import main

    args = ["estimate", "--method", "lora", "--backbone", "tiny-bert", "--seq-len", "32", "--json"]

    def peak(batch: int) -> int:
        assert main([*args, "--batch-size", str(batch)]) == 0
        return json.loads(capsys.readouterr().out)["predicted_cuda_peak_bytes"]

    five, six = peak(5), peak(6)
    assert five < six  # so 5 is the largest batch within five's peak
    assert main([*args, "--fit", str(five), "--fit-on", "allocated"]) == 0
    answer = json.loads(capsys.readouterr().out)  # the whole of stdout: one JSON document
    assert (answer["fit_bytes"], answer["batch_size"], answer["predicted_cuda_peak_bytes"]) == (five, 5, five)
    assert answer["next"] == {"batch_size": 6, "predicted_cuda_peak_bytes": six}


def test_help_is_fast_and_explains() -> None:
    proc = spbench("--help")
    assert proc.returncode == 0 and "estimate" in proc.stdout and "predicted" in proc.stdout


def test_only_input_errors_are_user_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An InputError is one line with exit code 2; a bug (a bare KeyError) keeps its traceback."""
    from spbench import cli
    from spbench.errors import InputError

    def failing(exc: BaseException) -> object:
        def cmd(args: object) -> int:
            raise exc
        return cmd

    monkeypatch.setattr(cli, "cmd_list", failing(InputError("bad value")))
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "spbench list: error: bad value"
    monkeypatch.setattr(cli, "cmd_list", failing(KeyError("a bug")))
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["list"])


def _limited_memory() -> None:
    """A child's address space capped at 8 GiB: a real allocation of the batch fails at once
    (rather than swapping the machine), a prediction on fake tensors needs far less."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


@pytest.mark.parametrize("objective", ["classification", "prompt"])
def test_estimate_answers_for_any_batch_size(objective: str) -> None:
    """The prediction builds nothing real, the synthetic batch included: a billion rows give
    an answer (bytes, enormous), at least one float32 hidden state of the whole batch."""
    batch, seq_len, hidden = 1_000_000_000, 16, 32  # tiny-bert's hidden size
    proc = subprocess.run([sys.executable, "-m", "spbench.cli", "estimate", "--method", "lora",
                           "--backbone", "tiny-bert", "--objective", objective, "--batch-size", str(batch),
                           "--seq-len", str(seq_len), "--json"],
                          capture_output=True, text=True, preexec_fn=_limited_memory, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["batch_size"] == batch
    assert info["predicted_cuda_peak_bytes"] >= batch * seq_len * hidden * 4
    assert info["predicted_inference_peak_bytes"] >= batch * seq_len * hidden * 4
