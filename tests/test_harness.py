"""Steps run through `run_step`: dated log lines (also from the CLI), and the rule's thread count reaching
torch and the tokenizers pool, without importing torch into steps that do not use it."""

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from virnucpro.harness import run_step

DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} virnucpro INFO ")


def _say(text):
    logging.getLogger("virnucpro").info(text)
    return text


def test_step_log_lines_carry_the_date_and_the_last_one_time_and_memory(tmp_path):
    assert run_step(tmp_path / "step.log", _say, "hello", threads=2) == "hello"
    lines = (tmp_path / "step.log").read_text().splitlines()
    assert len(lines) == 2 and all(DATED.match(line) for line in lines) and lines[0].endswith("hello"), lines
    done = re.search(r"_say: done in ([0-9.]+) s, peak memory ([0-9]+) MB, 2 thread\(s\)$", lines[1])
    assert done and float(done.group(1)) < 60, lines[1]


def test_the_peak_memory_is_the_steps_own(tmp_path):
    """A step that touches 300 MB reports at least that; the same process, before, reported less."""
    code = textwrap.dedent("""
        import sys
        from virnucpro.harness import run_step

        def hold(mb):
            return len(b"x" * (mb << 20))

        run_step(sys.argv[1], hold, int(sys.argv[2]), threads=1)
    """)
    peaks = []
    for mb in (0, 300):
        log = tmp_path / f"{mb}.log"
        subprocess.run([sys.executable, "-c", code, str(log), str(mb)], check=True, capture_output=True)
        peaks.append(int(re.search(r"peak memory ([0-9]+) MB", log.read_text()).group(1)))
    assert peaks[1] >= 300 and peaks[1] - peaks[0] >= 280, peaks


def test_cli_log_lines_carry_the_date(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\n" + "ATG" * 200 + "\n")
    out = [str(tmp_path / n) for n in ("f.fna", "f.faa")]
    proc = subprocess.run(
        [sys.executable, "-m", "virnucpro.cli", "prepare", str(fasta), "--fragment-size", "300",
         "--out-dna", out[0], "--out-protein", out[1]],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(DATED.match(l) for l in lines), lines


def test_threads_reach_torch_and_the_tokenizers_pool(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    seen = run_step(tmp_path / "step.log", lambda: (torch.get_num_threads(), os.environ["RAYON_NUM_THREADS"]), threads=3)
    assert seen == (3, "3")


def test_threads_hold_for_torch_imported_by_the_step(tmp_path):
    """A step that imports torch only when it runs still gets the rule's thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, env=env, check=True).stdout
    if int(default) == 1:
        pytest.skip("torch runs on one thread here anyway: one thread proves nothing")
    code = textwrap.dedent(
        f"""
        import sys
        from virnucpro.harness import run_step
        assert "torch" not in sys.modules
        def step():
            import torch
            return torch.get_num_threads()
        seen = run_step({str(tmp_path / "step.log")!r}, step, threads=1)
        assert seen == 1, seen
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_cpu_steps_do_not_import_torch_for_their_threads(tmp_path):
    """A step whose code does not use torch (prepare) runs without torch ever being imported."""
    code = textwrap.dedent(
        f"""
        import sys
        from virnucpro.harness import run_step
        from virnucpro.steps.prepare import cut_and_translate
        d = {str(tmp_path)!r}
        with open(d + "/in.fa", "w") as fh:
            fh.write(">a\\n" + "ATG" * 200 + "\\n")
        run_step(d + "/step.log", cut_and_translate, d + "/in.fa", 300, d + "/f.fna", d + "/f.faa", threads=2)
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("sig,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_step_ends_in_one_line_and_leaves_no_output(tmp_path, sig, status):
    """SIGINT or SIGTERM while a step writes its outputs: one error line `<step>: interrupted (SIG...)` in
    the log and on stderr, no traceback, exit status 128 + the signal's number, nothing under the final
    name and no temporary file left."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from virnucpro.io.atomic import atomic_outputs
        from virnucpro.harness import run_step
        def write_table(out):
            with atomic_outputs(out) as (tmp,):
                tmp.write_text("half a table")
                os.kill(os.getpid(), signal.{sig})
                signal.pause()  # the handler raises before this returns
        run_step({str(tmp_path / "step.log")!r}, write_table, {str(tmp_path / "table.tsv")!r}, threads=1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == status, proc.stderr
    line = f"virnucpro ERROR write_table: interrupted ({sig})"
    assert proc.stderr.strip().endswith(line) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (tmp_path / "step.log").read_text().strip().endswith(line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.log"]


def test_run_step_gives_the_signal_handlers_back(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    during = run_step(tmp_path / "step.log", lambda: (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)),
                      threads=1)
    assert during != before and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
