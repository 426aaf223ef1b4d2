"""Every default setting, in one place: the package's functions and the `virnucpro` command take them from
here, and `config/config.yaml` holds the same values for the workflow (tests/test_cli.py checks that
the two agree: `CONFIG` is the part of the config they set).
"""

FRAGMENT_SIZES = (300, 500)  # the fragment lengths the original classifiers were trained on
FRAGMENT_SIZE = 500
MIN_LENGTH = None  # bp; None: the fragment size
MAX_RECORD_BP = 100_000_000  # the longest input record accepted (bases, blanks aside)

ESM2_TOKENS_PER_BATCH = {"cuda": 65536, "cpu": 4096}  # token budget of one packed batch, by device type
DNABERT_TOKENS_PER_BATCH = {"cuda": 65536, "cpu": 8192}
LOCK_STALE_MINUTES = 10  # a shard's lock without a heartbeat for this long, from another host, is taken over
PRECISION = "float16"  # ESM-2's on a GPU: float16 or float8
FLOAT8_CHECK_FRAMES = 2048  # calibration frames of the float8 check
FLOAT8_MIN_CALL_AGREEMENT = 0.999
FLOAT8_MIN_COSINE = 0.999
TOKENS_PER_SHARD = 50_000_000  # ESM-2 tokens of one embedding job

VIRAL_FRACTION_THRESHOLD = 0.5
PLOT_TOP_SEQUENCES = 20
MAX_GAP_FRAGMENTS = 1
MIN_VIRAL_FRAGMENTS = 2
MAX_TABLE_ROWS = 1000

TRAIN_SEED = 42
TRAIN_MAX_EPOCHS = 200
TRAIN_PATIENCE = 5

CONFIG = {  # config.yaml's keys that these defaults set
    "fragment_size": FRAGMENT_SIZE,
    "min_length": MIN_LENGTH,
    "max_record_bp": MAX_RECORD_BP,
    "embed": {"esm2_tokens_per_batch": ESM2_TOKENS_PER_BATCH, "dnabert_tokens_per_batch": DNABERT_TOKENS_PER_BATCH,
              "lock_stale_minutes": LOCK_STALE_MINUTES, "precision": PRECISION,
              "float8_check": {"frames": FLOAT8_CHECK_FRAMES, "min_call_agreement": FLOAT8_MIN_CALL_AGREEMENT,
                               "min_cosine": FLOAT8_MIN_COSINE}},
    "summary": {"viral_fraction_threshold": VIRAL_FRACTION_THRESHOLD, "plot_top_sequences": PLOT_TOP_SEQUENCES},
    "regions": {"max_gap_fragments": MAX_GAP_FRAGMENTS, "min_viral_fragments": MIN_VIRAL_FRAGMENTS},
    "report": {"max_table_rows": MAX_TABLE_ROWS},
    "shards": {"tokens_per_shard": TOKENS_PER_SHARD},
    "train": {"seed": TRAIN_SEED},
}
