"""Generated inputs for the front end (`prepare`) and the steps after it (tests/test_prepare.py,
tests/test_summary.py)."""


def min_length_records(rng):
    """A 3 bp and a 299 bp record (stop-free frames), one of exactly 300 bp, one without a stop-free
    frame, and a long one: around the 300 bp fragment size."""
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
    coding = lambda n: "".join(rng.choice(sense, n // 3 + 1))[:n]  # noqa: E731
    return [("tiny", "AAA"), ("just_short", coding(299)), ("exact", coding(300)), ("stops", "TAAT" * 150),
            ("long", coding(901))]
