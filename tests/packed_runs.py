"""One encoder's sequences through the packed runner, as the tests and benchmarks run it."""

from virnucpro.models.runner import Task, run_packed


def embed_packed(ids, sequences, tokenize, forward, dim, device, tokens_per_batch, label, lengths=None):
    """One task through `run_packed`: (N, dim) float32 in input order (see `Task` for the arguments)."""
    if tokens_per_batch < 1:
        raise ValueError(f"tokens_per_batch must be positive, got {tokens_per_batch}")
    task = Task(label, list(ids), list(sequences), tokenize, forward, dim, tokens_per_batch, lengths)
    return run_packed([task], device)[0]
