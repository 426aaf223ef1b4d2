"""The classify step: every frame of a sample scored by the VirNucPro classifier.

It writes the original's `prediction_results` table: header `Sequence_ID\\tPrediction\\tscore1\\tscore2`,
one row per frame in the order of the sample's frames, scores printed as the original prints them
(`str` of each float32 value), Prediction `virus` when the argmax is column 1, else `others`.
"""

import logging

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.notes import check_note
from virnucpro.models.classifier import classifier_of, prediction_lines
from virnucpro.results.original_files import PREDICTION_HEADER as HEADER
from virnucpro.io.features import iter_features

log = logging.getLogger("virnucpro")


def classify(member, note, fragment_size, out):
    """Score every frame of a sample (named by its member plan, `virnucpro.io.members`; features read from
    the embedding store) with the classifier that `note` (a model note or the path of one) names; write
    the prediction table `out`."""
    note = check_note(note)
    clf = classifier_of(note)
    model = note["source"]
    if clf.fragment_size != int(fragment_size):
        raise VirNucProError(
            f"{model}: classifier trained on {clf.fragment_size} bp fragments, but fragment_size is "
            f"{fragment_size}; use the {fragment_size}_model classifier or change fragment_size"
        )
    n_frames = n_virus = 0
    with atomic_outputs(out) as (tmp,):
        with open(tmp, "w") as fh:
            fh.write(HEADER)
            for ids, features in iter_features(member, width=clf.input_dim, wanted_by=f"the classifier {model}"):
                probabilities = clf.scores(features)
                fh.writelines(prediction_lines(ids, probabilities))
                n_frames += len(ids)
                n_virus += int((probabilities[:, 1] > probabilities[:, 0]).sum())
    log.info("classified %d frames of %s (%d virus) with %s -> %s", n_frames, member, n_virus, model, out)
    return out
