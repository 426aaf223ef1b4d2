"""What a failed run left undone, for the short block that ends it: the samples that did not finish and
why (the error their front end recorded, or the last error line of their steps' logs), and the errors of
the pooled embedding stage, which concern several samples at once."""

from pathlib import Path

from virnucpro.steps.prepare import read_status

FINAL = "sequence_summary.tsv"  # a sample is finished when its summary is there


def last_error(logs):
    """The last error line of the given log files (the step's one-line message), or None."""
    found = None
    for path in sorted(logs):
        for line in Path(path).read_text(errors="replace").splitlines():
            if " ERROR " in line:
                found = line.split(" ERROR ", 1)[1].strip()
    return found


def unfinished(results, samples):
    """Lines naming every sample of `samples` without its final table, and why; [] when all finished."""
    results = Path(results)
    lines = []
    for sample in samples:
        out = results / sample
        if (out / FINAL).is_file():
            continue
        status = out / "prepare" / "status.json"
        reason = read_status(status) if status.is_file() else None
        reason = reason or last_error((out / "logs").rglob("*.log")) or "not reached (see the errors above)"
        lines.append(f"  {sample}: {reason}")
    stage = last_error((results / "embedding").glob("*/logs/**/*.log"))
    if stage:
        lines.append(f"  the embedding stage: {stage}")
    if lines:
        lines.insert(0, f"{len(lines) - bool(stage)} of {len(samples)} sample(s) did not finish:")
    return lines
