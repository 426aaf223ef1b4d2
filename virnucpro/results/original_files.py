"""The original VirNucPro's own result files, beside ours, for scripts written for the original tool.

Its `prediction.py` writes, from the classifier's float32 probabilities:
- `prediction_results.txt`: header `Sequence_ID\\tPrediction\\tscore1\\tscore2`, one row per frame,
  Prediction `virus` when the argmax of (score1, score2) is score2 (a tie is `others`, the first
  maximum), scores printed with `str` of each float32 value;
- `prediction_results_highestscore.csv` (tab-separated despite the name): the same table read back with
  pandas, grouped by `Modified_ID` (the frame id without its two-character frame suffix, i.e. the
  fragment id), `Is_Virus` = max score2 >= max score1 over the group, written as `True`/`False`. The
  groupby sorts the fragment ids as strings (code point order: `x_chunk_10` before `x_chunk_2`).
The first is our `prediction_results.tsv`, byte for byte (classify writes the original's table: its
rows keep the frame order, the original's for up to 10,000 frames, past which its own order depends on
the file system); the second is written here from the per-fragment calls (`write_highest_scores`), in
the original's order and format. A sample without frames gives both headers alone. Both are kept for
drop-in use, since scripts written for the original open these names.
"""


PREDICTION_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
CALLS_HEADER = "Modified_ID\tIs_Virus\n"


def write_highest_scores(path, fragment_ids, viral):
    """`prediction_results_highestscore.csv` from fragment ids and their original per-fragment calls."""
    calls = sorted(zip(fragment_ids, (bool(v) for v in viral)))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(CALLS_HEADER)
        fh.writelines(f"{i}\t{v}\n" for i, v in calls)
