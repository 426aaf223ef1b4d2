"""The run's folder layout: every file the workflow writes, named once, for the rules, the scripts, the
`virnucpro` command and the tests.

Under the results folder (`results` in config.yaml):

    {sample}/                       one folder per sample: PREPARE, PREDICTIONS, SUMMARY, logs/
    embedding/{pool}/               the pooled embedding stage of a pool ("samples", or "train" for the
                                    training sets): PLAN, MEMBERS, RECEIPTS, RECEIPT_LIST, logs/
    OVERVIEW, VIEWS                 the run's files, across samples
    train/                          TRAINED, TRAIN_METRICS (`snakemake train`)

Under the models folder (`models.dir`): the downloads, NOTES, CONVERTED and KERNELS. `Output` entries
also name how `snakemake --report` shows a file (its caption in workflow/report/, its labels).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """A file of the run: its path (relative to its folder) and, for the report, its caption file
    (workflow/report/{caption}.rst) and labels (None: not in the report)."""

    path: str
    caption: str = None
    result: str = None
    form: str = None


# per sample, under {results}/{sample}/
PREPARE = {"dna": "prepare/frames.fna", "protein": "prepare/frames.faa", "manifest": "prepare/sequences.tsv",
           "status": "prepare/status.json"}
PREDICTIONS = "prediction_results.tsv"
SUMMARY = {  # the summarize step's outputs
    "fragment_calls": Output("fragment_calls.tsv", "fragment_calls", "fragment calls", "TSV (download)"),
    "sequence_summary": Output("sequence_summary.tsv", "sequence_summary_tsv", "sequence summary", "TSV (download)"),
    "viral_regions": Output("viral_regions.tsv", "viral_regions_tsv", "viral regions", "TSV (download)"),
    "viral_fasta": Output("viral.fna"),
    "regions_fasta": Output("viral_regions.fna", "viral_regions_fna", "viral region sequences", "FASTA (download)"),
    "regions_gff": Output("viral_regions.gff3", "viral_regions_gff", "viral regions", "GFF3 (download)"),
    "score_track": Output("tracks/virus_score.bedGraph", "virus_score_track", "virus score track",
                          "bedGraph (download)"),
    "region_track": Output("tracks/viral_regions.bed", "viral_regions_track", "viral regions track", "BED (download)"),
    "original_predictions": Output("prediction_results.txt"),
    "original_calls": Output("prediction_results_highestscore.csv"),
    "histogram": Output("plots/score_histogram.png", "score_histogram", "virus score histogram", "plot"),
    "along": Output("plots/score_along_sequences.png", "score_along_sequences", "virus score along sequences", "plot"),
    "sequences_view": Output("report/sequence_summary.html", "sequence_summary", "sequence summary", "table"),
    "regions_view": Output("report/viral_regions.html", "viral_regions", "viral regions", "table"),
}
FINISHED = SUMMARY["sequence_summary"].path  # a sample is finished when its summary is there
PROVENANCE_POINTER = "provenance.txt"  # names the run's provenance; written by the overview where it changed

# the run's files, under {results}/
OVERVIEW = {  # the overview step's outputs
    "overview": Output("overview.tsv", "overview", "all samples"),
    "unfinished": Output("unfinished.tsv", "unfinished", "samples that did not finish"),
    "models": Output("models.tsv", "models", "models and checksums"),
    "parameters": Output("parameters.tsv", "parameters", "run parameters"),
    "all_sequences": Output("all_sequences.tsv", "all_sequences", "sequences of all samples"),
    "all_regions": Output("all_viral_regions.tsv", "all_viral_regions", "viral regions of all samples"),
    "provenance": Output("provenance.json", "provenance", "provenance"),
    # HTML tables for the report's pages (reasons are not markup; hashes shortened)
    "overview_view": Output("report/overview.html"),
    "unfinished_view": Output("report/unfinished.html"),
    "models_view": Output("report/models.html"),
    "provenance_view": Output("report/provenance.html"),
}
FLOAT8_TABLE = Output("float8_check.tsv", "float8_check", "float8 check")

# the embedding stage, under {results}/embedding/{pool}/
EMBEDDING = "embedding"
POOLS = ("samples", "train")
PLAN = "plan"  # a folder: PLAN_FILE and SHARDS
PLAN_FILE = "plan.json"
SHARDS = "shards"  # {shard}.faa, {shard}.fna
MEMBERS = "members"  # per member: {member}.json and {member}.frames.tsv (beside the plan, not in it)
RECEIPTS = "done"  # {shard}.json
RECEIPT_LIST = "receipts.txt"
FLOAT8_DECISION = "float8_check.json"  # of the samples' pool

# retraining, under {results}/
TRAINED = "train/{fragment_size}_model.safetensors"
TRAIN_METRICS = "train/metrics.tsv"

# under the models folder
NOTES = "notes"
CONVERTED = "converted"
KERNELS = "converted/kernels"  # the kernels Triton and Inductor build, shared by every job and machine
