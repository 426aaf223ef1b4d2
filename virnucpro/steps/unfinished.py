"""Why samples did not finish, in one phrase each: for the block that ends a failed run (`unfinished`)
and for the run's overview and report (`sample_reason`), so that both say the same.

A sample's reason is, in this order: the error its front end recorded (`prepare/status.json`); the last
error line of its steps' logs (a step's one-line error, or `<step>: interrupted (SIGINT)` from
`virnucpro.harness.run_step`); otherwise it was not reached, because the run was interrupted (a signal
the workflow noted) or because of the errors printed above. The errors of the pooled embedding stage,
which concern several samples at once, get a line of their own.
"""

from pathlib import Path

from virnucpro.io.status import read_status
from virnucpro.layout import EMBEDDING, FINISHED, PREPARE
NOT_REACHED = "not reached (see the errors above)"


def last_error(logs):
    """The last error line of the given log files (the step's one-line message), or None."""
    found = None
    for path in sorted(logs):
        for line in Path(path).read_text(errors="replace").splitlines():
            if " ERROR " in line:
                found = line.split(" ERROR ", 1)[1].strip()
    return found


def sample_reason(status=None, logs=(), interrupted=None):
    """Why a sample did not finish (module docstring): `status` is its prepare status file (None or a
    missing file: its front end did not finish), `logs` its steps' log files, `interrupted` the name of
    the signal that stopped the run (None when none did)."""
    if status is not None and Path(status).is_file():
        error = read_status(status)
        if error:
            return error
    error = last_error(logs)
    if error:
        return error
    if interrupted:
        return f"not reached: the run was interrupted ({interrupted})"
    return NOT_REACHED


def unfinished(results, samples, interrupted=None):
    """Lines naming every sample of `samples` without its final table, and why; [] when all finished.
    `interrupted`: the signal that stopped the run, if one did (it heads the block)."""
    results = Path(results)
    lines = []
    for sample in samples:
        out, status = results / sample, results / sample / PREPARE["status"]
        if (out / FINISHED).is_file() and not (status.is_file() and read_status(status)):
            continue  # finished (a summary left from before a front end that failed since does not count)
        reason = sample_reason(status, (out / "logs").rglob("*.log"), interrupted)
        lines.append(f"  {sample}: {reason}")
    stage = last_error((results / EMBEDDING).glob("*/logs/**/*.log"))
    if stage:
        lines.append(f"  the embedding stage: {stage}")
    if lines:
        head = f"{len(lines) - bool(stage)} of {len(samples)} sample(s) did not finish"
        lines.insert(0, f"the run was interrupted ({interrupted}); {head}:" if interrupted else f"{head}:")
    return lines
