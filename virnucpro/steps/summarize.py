"""The summarize step: one sample's per-fragment calls, one row per input sequence, viral regions, viral
sequences, genome-browser tracks, the original tool's own files, plots and HTML views.

`summarize(predictions, manifest, fasta, outputs, fragment_size, sample, settings)` reads the sample once
(`virnucpro.results.sample.read_sample`: the definitions of every column are there) and writes every
file of `virnucpro.layout.SUMMARY` (`outputs`: {name: path}, exactly those names), all together or none
at all:
- `fragment_calls`: `Modified_ID` (the fragment id), `Is_Virus` (True/False), `max_score1`, `max_score2`,
  one row per fragment with frames, in input order;
- `sequence_summary`: one row for every sequence of the manifest, in input order;
- `viral_regions` and the tracks `score_track` (bedGraph) and `region_track` (BED) (`virnucpro.results.tracks`);
- `viral_fasta`: the input sequences called viral with their full headers, and `regions_fasta`: the bases
  of every viral region (`virnucpro.results.viral_fasta`); `regions_gff`: the regions as GFF3 features;
- `original_predictions` (the prediction table's bytes under the original's name) and `original_calls`
  (`virnucpro.results.original_files`);
- `histogram` and `along`, the plots (`virnucpro.results.plots`);
- `sequences_view` and `regions_view`, the tables as HTML pages for the report (`virnucpro.results.views`).
Scores, fractions and means in our tables have the same fixed number of decimals (`virnucpro.io.tables`).
Sequences without a call appear only in the sequence summary (and its view): never in the fragment
calls, regions, tracks, viral FASTA or plots. `settings` are the summary, region and report settings
(`Settings`, config.yaml's summary, regions and report sections).
"""

import logging
import shutil
from dataclasses import dataclass

from virnucpro.defaults import (
    MAX_GAP_FRAGMENTS,
    MAX_RECORD_BP,
    MAX_TABLE_ROWS,
    MIN_VIRAL_FRAGMENTS,
    PLOT_TOP_SEQUENCES,
    VIRAL_FRACTION_THRESHOLD,
)
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.tables import score_texts, write_tsv
from virnucpro.layout import SUMMARY
from virnucpro.results.gff import write_region_gff
from virnucpro.results.original_files import write_highest_scores
from virnucpro.results.plots import plot_along, plot_histogram, top_by_mean_score
from virnucpro.results.regions import REGION_COLUMNS, check_region_settings, region_names, region_rows
from virnucpro.results.sample import FRAGMENT_COLUMNS, SEQUENCE_COLUMNS, read_sample
from virnucpro.results.tracks import write_region_track, write_score_track
from virnucpro.results.views import write_table_views
from virnucpro.results.viral_fasta import region_headers, write_viral_fasta

log = logging.getLogger("virnucpro")


@dataclass(frozen=True)
class Settings:
    """The settings that shape a sample's summary (config.yaml: summary.*, regions.*, report.*)."""

    threshold: float = VIRAL_FRACTION_THRESHOLD  # summary.viral_fraction_threshold
    top_sequences: int = PLOT_TOP_SEQUENCES  # summary.plot_top_sequences
    max_gap_fragments: int = MAX_GAP_FRAGMENTS  # regions.*
    min_viral_fragments: int = MIN_VIRAL_FRAGMENTS
    max_table_rows: int = MAX_TABLE_ROWS  # report.max_table_rows

    def check(self):
        """One-line errors naming the setting for values the summary cannot use."""
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise VirNucProError(f"viral fraction threshold must be between 0 and 1, not {self.threshold}")
        if int(self.top_sequences) < 0:
            raise VirNucProError(f"top_sequences must be 0 or more, not {self.top_sequences}")
        check_region_settings(self.max_gap_fragments, self.min_viral_fragments)
        return self


def summarize(predictions, manifest, fasta, outputs, fragment_size, sample="", settings=Settings(),
              max_bp=MAX_RECORD_BP):
    """Write the sample's files (module docstring); `sample` names it in plot titles, track names and views.
    Returns the `Sample`."""
    if set(outputs) != set(SUMMARY):
        raise VirNucProError(f"summarize writes {', '.join(SUMMARY)}; given {', '.join(outputs)}")
    result = read_sample(predictions, manifest, fragment_size, sample, settings.check())
    names = list(SUMMARY)
    with atomic_outputs(*(outputs[name] for name in names)) as tmp:
        paths = dict(zip(names, tmp))
        for write in WRITERS:
            write(paths, result, settings, predictions=predictions, fasta=fasta, max_bp=max_bp)
    _log_counts(result, settings.threshold)
    return result


# ------------------------------------------------------------------------------------------ writing
# Each writer takes (paths by output name, the Sample, the Settings) and the step's inputs by name.


def _tables(paths, s, settings, **inputs):
    rows = zip(s.fragment_ids(), s.frag["viral"].tolist(), score_texts(s.frag["max1"]), score_texts(s.frag["max2"]))
    write_tsv(paths["fragment_calls"], FRAGMENT_COLUMNS, rows)
    summary, regions = s.sequence_rows(), region_rows(s.seqs, s.regions)
    write_tsv(paths["sequence_summary"], SEQUENCE_COLUMNS, summary)
    write_tsv(paths["viral_regions"], REGION_COLUMNS, regions)
    write_table_views((SEQUENCE_COLUMNS, summary), (REGION_COLUMNS, regions), paths["sequences_view"],
                      paths["regions_view"], s.name, settings.max_table_rows)


def _sequences(paths, s, settings, fasta, max_bp, **inputs):
    headers = region_headers(s.regions, region_names(s.seqs, s.regions), s.name)
    write_viral_fasta(paths["viral_fasta"], fasta, s.table, max_bp, paths["regions_fasta"], s.regions, headers)
    write_region_gff(paths["regions_gff"], s.seqs, s.regions)


def _tracks(paths, s, settings, **inputs):
    write_score_track(paths["score_track"], s.seqs, s.layout, s.frag, s.name)
    write_region_track(paths["region_track"], s.seqs, s.regions, s.name)


def _original_files(paths, s, settings, predictions, **inputs):
    shutil.copyfile(predictions, paths["original_predictions"])  # the same table, the original's name
    write_highest_scores(paths["original_calls"], s.fragment_ids(), s.frag["viral"])


def _plots(paths, s, settings, **inputs):
    plot_histogram(paths["histogram"], s.frames, s.name)
    plot_along(paths["along"], s, top_by_mean_score(s.table, int(settings.top_sequences)))


WRITERS = (_tables, _sequences, _tracks, _original_files, _plots)


def _log_counts(s, threshold):
    status = s.table["status"]
    log.info(
        "%d sequences: %d classified, %d shorter than min_length, %d without a stop-free frame; %d called viral "
        "(viral fraction >= %s); %d viral region(s); %d fragments with frames, %d frames",
        len(status), int((status == "classified").sum()), int((status == "shorter_than_min_length").sum()),
        int((status == "no_stop_free_frame").sum()), int((s.table["call"] == "viral").sum()), threshold,
        len(s.regions["owner"]), len(s.frag["owner"]), len(s.frames["owner"]),
    )
