"""The whole workflow on CPU with tiny models in their real on-disk formats: every stage, every output,
the report, shard-count invariance, the embedding store across reruns, added samples and projects,
retraining through the `train` target, and viral regions in chimeras found with the retrained
classifier."""

import json
import re
import shutil

import numpy as np
import pytest

from tests.workflow_runs import REPO, SAMPLES, TABLES, rows, snakemake, tiny_workdir
from virnucpro.io.seqio import read_fasta, read_sequences

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def ran(proc, rule):
    """How many jobs of `rule` a snakemake run started."""
    return len(re.findall(rf"^(?:local)?rule {rule}:$", proc.stdout + proc.stderr, re.M))


def plan_of(work, batch="samples"):
    return json.loads((work / "results" / "embedding" / batch / "plan" / "plan.json").read_text())


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, tiny_models):
    """The default target with small shards (several per sample), then the report."""
    work = tiny_workdir(tmp_path_factory.mktemp("e2e"), tiny_models, **{"shards.tokens_per_shard": 12000})
    snakemake(work, "--cores", "2")
    snakemake(work, "--report", "report.html")
    return work


def test_every_stage_produces_its_outputs(sharded_run):
    plan = plan_of(sharded_run)
    names = sorted(s["name"] for s in plan["shards"])
    assert len(names) >= 2 and plan["frames_to_embed"] == plan["distinct_frames"]  # a fresh store
    done = sharded_run / "results" / "embedding" / "samples" / "done"
    assert sorted(p.stem for p in done.glob("*.json")) == names
    store = sharded_run / "resources" / "embeddings"
    for ns in plan["namespaces"].values():
        assert sorted(p.stem for p in (store / f"{ns['encoder']}-{ns['id']}").glob("*.h5")) == names
    for sample, src in SAMPLES.items():
        out = sharded_run / "results" / sample
        frames = [i for i, _ in read_fasta(out / "prepare" / "frames.faa")]
        table = rows(out / "prediction_results.tsv")
        assert table[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
        assert [r[0] for r in table[1:]] == frames
        for r in table[1:]:
            s1, s2 = float(r[2]), float(r[3])
            assert abs(s1 + s2 - 1) < 1e-5 and r[1] == ("virus" if s2 > s1 else "others")
        for plot in ("score_histogram.png", "score_along_sequences.png"):
            assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_input_sequence_appears_once_in_the_summary(sharded_run):
    for sample, src in SAMPLES.items():
        out = sharded_run / "results" / sample
        ids = [rid for rid, _ in read_sequences(src)]
        summary = rows(out / "sequence_summary.tsv")
        assert [r[0] for r in summary[1:]] == ids
        header = summary[0]
        called = {r[0] for r in summary[1:] if r[header.index("call")] == "viral"}
        viral = {rid for rid, _ in read_sequences(out / "viral.fna")} if called else set()
        assert viral == called


def test_report_holds_tables_and_plots(sharded_run):
    html = (sharded_run / "report.html").read_text(errors="replace")
    for name in ("sequence_summary.tsv", "fragment_calls.tsv", "score_histogram.png"):
        assert name in html


def test_results_do_not_depend_on_the_shard_count(sharded_run, tmp_path, tiny_models):
    """One shard pooling both samples, against several shards: the same bytes in every table."""
    work = tiny_workdir(tmp_path, tiny_models, **{"shards.tokens_per_shard": 10**9})
    snakemake(work, "--cores", "2")
    assert len(plan_of(work)["shards"]) == 1
    for sample in SAMPLES:
        for table in TABLES:
            a = (sharded_run / "results" / sample / table).read_bytes()
            assert (work / "results" / sample / table).read_bytes() == a, (sample, table)


def test_an_added_sample_embeds_only_its_new_frames(sharded_run, tmp_path):
    """A copy of the finished run gets a third sample: half of sample_a's records again (under other
    names) and two new records. Only the new records' frames are embedded; the other samples' tables
    keep their bytes."""
    work = tmp_path / "work"
    shutil.copytree(sharded_run, work, symlinks=True)
    records = list(read_sequences(SAMPLES["sample_a"]))
    rng = np.random.default_rng(8)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
    new = ["".join(rng.choice(sense, 300)) for _ in range(2)]  # stop-free in frame F1: frames are kept
    text = "".join(f">again_{rid}\n{seq.decode()}\n" for rid, seq in records[::2])
    text += "".join(f">new_{i}\n{seq}\n" for i, seq in enumerate(new))
    (tmp_path / "third.fa").write_text(text)
    with open(work / "config" / "samples.tsv", "a") as fh:
        fh.write(f"third\t{tmp_path / 'third.fa'}\n")
    before = {(s, t): (work / "results" / s / t).read_bytes() for s in SAMPLES for t in TABLES}
    proc = snakemake(work, "--cores", "2")
    plan = plan_of(work)
    third_frames = dict(read_fasta(work / "results" / "third" / "prepare" / "frames.faa"))
    new_frames = [i for i in third_frames if i.startswith("new_")]
    assert len(new_frames) > 0 and plan["frames_to_embed"] == len(new_frames)
    assert sum(s["esm2"] for s in plan["shards"]) == len(new_frames)
    assert ran(proc, "embed") == len(plan["shards"])
    for key, data in before.items():
        assert (work / "results" / key[0] / key[1]).read_bytes() == data, key
    again = rows(work / "results" / "third" / "prediction_results.tsv")
    first = {r[0]: r for r in rows(work / "results" / "sample_a" / "prediction_results.tsv")[1:]}
    for r in again[1:]:
        if r[0].startswith("again_"):  # the same frame content: the same scores
            assert first[r[0].removeprefix("again_")][1:] == r[1:]


def test_a_store_shared_by_two_projects_embeds_nothing_twice(sharded_run, tmp_path, tiny_models):
    store = sharded_run / "resources" / "embeddings"
    work = tiny_workdir(tmp_path, tiny_models, **{"embed.store": str(store), "shards.tokens_per_shard": 777})
    proc = snakemake(work, "--cores", "2")
    assert plan_of(work)["shards"] == [] and ran(proc, "embed") == 0 and ran(proc, "summarize") == 2
    for sample in SAMPLES:
        for table in TABLES:
            assert (work / "results" / sample / table).read_bytes() == \
                (sharded_run / "results" / sample / table).read_bytes(), (sample, table)


GC_RICH = ["GCC", "GGC", "CGC", "GCG", "CCG", "GGG", "CCC", "GAC", "CAG"]  # "viral" in the retraining
AT_RICH = ["AAT", "TTA", "ATA", "TAT", "AAA", "TTT", "ATT", "AAC", "TTG"]  # "other"
# chimeras (id: parts in order) of GC-rich "viral" and AT-rich "host" stop-free coding sequence
CHIMERAS = {
    "viral_then_host": [("viral", 1500), ("host", 1500)],  # junction on a fragment boundary
    "host_then_viral": [("host", 1650), ("viral", 1350)],  # junction inside fragment 6
    "prophage": [("host", 1203), ("viral", 1800), ("host", 1500)],  # 4503 bp: overlapping fragments
    "all_viral": [("viral", 900)],
    "all_host": [("host", 900)],
}


def coding(rng, codons, length):
    return "".join(rng.choice(codons, length // 3))


def coding_fasta(path, codons, n, length, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f">{path.stem}_{i}\n{coding(rng, codons, length)}\n")


def chimera_fasta(path, seed):
    """Write CHIMERAS (headers with a description); returns {id: [(start, end) of viral parts, 0-based]}."""
    rng = np.random.default_rng(seed)
    truth = {}
    with open(path, "w") as fh:
        for name, parts in CHIMERAS.items():
            seq, viral = "", []
            for kind, bp in parts:
                if kind == "viral":
                    viral.append((len(seq), len(seq) + bp))
                seq += coding(rng, GC_RICH if kind == "viral" else AT_RICH, bp)
            fh.write(f">{name} chimera: {' + '.join(f'{k} {bp} bp' for k, bp in parts)}\n{seq}\n")
            truth[name] = viral
    return truth


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_models):
    """`snakemake train`, then the default target on the same config: the classifier retrained on
    GC-rich "viral" and AT-rich "other" sequences (300 bp fragments) classifies a sample of chimeras of
    the two; then the report. (models.classifier names the retrained file relative to the working
    directory, which the workflow takes as it is once the file exists.)"""
    d = tmp_path_factory.mktemp("trained")
    coding_fasta(d / "viral.fa", GC_RICH, 60, 900, seed=1)
    coding_fasta(d / "other.fa", AT_RICH, 60, 900, seed=2)
    truth = chimera_fasta(d / "chimeras.fa", seed=3)
    train = {"viral": [str(d / "viral.fa")], "other": [str(d / "other.fa")], "seed": 7}
    models = {**tiny_models, "models.classifier": "results/train/300_model.safetensors"}
    work = tiny_workdir(d / "work", models, sheet={"chimeras": d / "chimeras.fa"}, fragment_size=300, train=train)
    snakemake(work, "--cores", "2", "train")
    snakemake(work, "--cores", "2")
    snakemake(work, "--report", "report.html")
    return work, truth


def test_train_target_learns_two_compositions(trained_run):
    """GC-rich and AT-rich stop-free coding sequences, through prepare, shards, both embeddings and
    the original training recipe: the held-out AUROC must reach 0.9."""
    work, _ = trained_run
    metrics = dict(rows(work / "results" / "train" / "metrics.tsv")[1:])
    assert float(metrics["auroc"]) >= 0.9, metrics
    assert int(metrics["heldout_frames"]) >= 30
    assert (work / "results" / "train" / "300_model.safetensors").stat().st_size > 0


def test_region_boundaries_fall_within_one_fragment_of_the_junctions(trained_run):
    work, truth = trained_run
    table = rows(work / "results" / "chimeras" / "viral_regions.tsv")
    header = table[0]
    found = {}
    for r in table[1:]:
        r = dict(zip(header, r))
        found.setdefault(r["sequence_id"], []).append((int(r["start"]) - 1, int(r["end"]), r["whole_sequence"]))
    assert set(found) == {name for name, viral in truth.items() if viral}, found
    for name, viral in truth.items():
        if not viral:
            continue
        assert len(found[name]) == len(viral) == 1, (name, found[name])
        (start, end, whole), (true_start, true_end) = found[name][0], viral[0]
        assert abs(start - true_start) <= 300 and abs(end - true_end) <= 300, (name, found[name], viral)
        length = sum(bp for _, bp in CHIMERAS[name])
        assert whole == str(start == 0 and end == length), (name, whole)
    assert found["all_viral"][0] == (0, 900, "True")
    headers = [line for line in (work / "results" / "chimeras" / "viral.fna").read_text().splitlines()
               if line.startswith(">")]
    assert headers and all(h.split()[1] == "chimera:" and "bp" in h for h in headers)  # full input headers


def test_overview_counts_agree_with_the_sample_tables(trained_run):
    """The overview row of the chimeras: every count from the sample's own tables; the viral sequences'
    bases (their whole length) and the bases inside viral regions are both there, and differ."""
    work, truth = trained_run
    sample = work / "results" / "chimeras"
    header, row = rows(work / "results" / "overview.tsv")
    got = {k: v if k in ("sample", "status", "median_virus_score") else int(v) for k, v in zip(header, row)}
    summary = [dict(zip(rows(sample / "sequence_summary.tsv")[0], r)) for r in rows(sample / "sequence_summary.tsv")[1:]]
    regions = [dict(zip(rows(sample / "viral_regions.tsv")[0], r)) for r in rows(sample / "viral_regions.tsv")[1:]]
    viral = [int(r["length"]) for r in summary if r["call"] == "viral"]
    assert got == {
        "sample": "chimeras", "status": "finished", "sequences": len(truth),
        "bp": sum(int(r["length"]) for r in summary), "classified": sum(r["status"] == "classified" for r in summary),
        "no_call": sum(r["status"] != "classified" for r in summary), "viral_sequences": len(viral),
        "viral_sequence_bp": sum(viral), "viral_regions": len(regions),
        "viral_region_bp": sum(int(r["length"]) for r in regions),
        "median_virus_score": f"{np.median([float(r['max_virus_score']) for r in summary if r['status'] == 'classified']):.6f}",
    }
    assert got["viral_sequences"] >= 1 and got["viral_sequence_bp"] >= 900  # all_viral (900 bp) at least
    assert got["viral_region_bp"] > 0 and got["classified"] + got["no_call"] == got["sequences"]
    assert rows(work / "results" / "unfinished.tsv") == [["sample", "reason"]]
    page = (work / "report.html").read_text()
    assert "Every sample of this run finished" in page and "Samples that did not finish" not in page
    every = rows(work / "results" / "all_sequences.tsv")  # one sample: its table under its name
    assert every == [["sample", *rows(sample / "sequence_summary.tsv")[0]],
                     *[["chimeras", *r] for r in rows(sample / "sequence_summary.tsv")[1:]]]
    assert rows(work / "results" / "all_viral_regions.tsv")[1:] == [["chimeras", *r] for r in
                                                                   rows(sample / "viral_regions.tsv")[1:]]


def test_provenance_names_the_commit_devices_models_and_settings(trained_run):
    """provenance.json of a CPU run from this source tree, and the sample folder's pointer to it."""
    import subprocess

    import virnucpro

    work, _ = trained_run
    record = json.loads((work / "results" / "provenance.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["workflow"]["version"] == virnucpro.__version__ and record["workflow"]["commit"] == (head or None)
    assert record["embedding"]["shards"] >= 1 and record["embedding"]["devices"]  # what the store files record
    assert record["embedding"]["precision"] == "float16" and record["embedding"]["float8_check"] is None
    assert [[m[k] for k in ("model", "file", "sha256", "verified")] for m in record["models"]] == \
        rows(work / "results" / "models.tsv")[1:]
    assert record["settings"]["fragment_size"] == "300"
    pointer = (work / "results" / "chimeras" / "provenance.txt").read_text()
    assert pointer.endswith("../provenance.json\n") and virnucpro.__version__ in pointer


# ----------------------------------------------------------------------------- the report in a browser

WIDTH = 1280  # the window the layout must fit
# each table as [the right edge of its content, of its box (the element that scrolls: the table itself,
# or the box around it), whether that box scrolls sideways, of the text column holding it (the report's
# div.prose, else the page)]
BOXES_JS = "return [...document.querySelectorAll('table')].map(t => {" \
           "const b = getComputedStyle(t).display === 'block' ? t : t.parentElement;" \
           "const c = (t.closest('div.prose') || document.body).getBoundingClientRect();" \
           "const scrolls = ['auto', 'scroll'].includes(getComputedStyle(b).overflowX);" \
           "const content = b.getBoundingClientRect().left + b.scrollWidth;" \
           "return [content, b.getBoundingClientRect().right, scrolls, c.right]; })"
PAGE_WIDTH_JS = "return [document.documentElement.scrollWidth, window.innerWidth]"
TABLES_JS = "return [...document.querySelectorAll(arguments[0])].map(t => [...t.querySelectorAll('tr')]" \
            ".map(r => [...r.querySelectorAll('th, td')].map(c => c.innerText.trim())))"


def item_row(driver, result, form):
    """The menu row of the report item with labels `result` and `form`."""
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, "nav tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if cells[:2] == [result, form]:
            return row
    raise AssertionError(f"no report item {result!r} ({form})")


def fits_in_window(driver, where, right=WIDTH):
    """The page is no wider than its window; every table's box ends inside `right` (px) and inside the
    text column that holds it, and a table wider than that fits by scrolling in its box."""
    width, window = driver.execute_script(PAGE_WIDTH_JS)
    assert width <= window, f"{where}: the page is {width} px wide in a {window} px window"
    boxes = driver.execute_script(BOXES_JS)
    assert boxes, where
    for content, box, scrolls, column in boxes:
        assert box <= min(right, column + 1) and (content <= box + 1 or scrolls), (where, boxes)
    return boxes


def view_in_page(driver, wait, result, form, check=None):
    """Open an item's view (the eye button); returns the text tables of the HTML page it shows, after
    `check(driver, where, right)` in it (right: where the frame ends in the window)."""
    from selenium.webdriver.common.by import By

    item_row(driver, result, form).find_element(By.CSS_SELECTOR, "a[iconname=eye]").click()
    frame = wait.until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
    frame_box = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right]", frame)
    assert frame_box[1] <= WIDTH, (result, frame_box)
    driver.switch_to.frame(frame)
    tables = wait.until(lambda d: d.execute_script(TABLES_JS, "table"))
    if check:
        check(driver, result, frame_box[1] - frame_box[0])
    driver.switch_to.default_content()
    return tables


def caption_of(driver, wait, result, form):
    """The text an item's information panel shows (its caption under DESCRIPTION); then back to the list."""
    from selenium.webdriver.common.by import By

    item_row(driver, result, form).find_element(By.CSS_SELECTOR, "a[iconname=information-circle]").click()
    text = wait.until(lambda d: "DESCRIPTION" in d.find_element(By.TAG_NAME, "nav").text
                      and d.find_element(By.TAG_NAME, "nav").text)
    driver.find_element(By.LINK_TEXT, "Samples").click()
    return text


@pytest.mark.browser
def test_report_reads_in_a_browser(trained_run, browser, tmp_path):
    """The report as a person opens it, in headless Chromium without network: the front page shows the
    workflow, the samples overview, the models with checksums and the parameters as tables; every item
    has a caption; a sample's viral regions and sequence summary are tables in the page; plots load."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    work, _ = trained_run
    results = work / "results"
    browser.set_window_size(WIDTH, 1000)
    browser.get((work / "report.html").as_uri())
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "Samples overview" in d.find_element(By.TAG_NAME, "body").text)
    front = browser.find_element(By.TAG_NAME, "body").text
    assert "which parts of them, are viral" in front and "How to read it" in front and "Provenance" in front
    shown = browser.execute_script(TABLES_JS, "div.prose table")
    for name in ("overview.tsv", "parameters.tsv"):
        assert rows(results / name) in shown, (name, shown)
    models = rows(results / "models.tsv")
    shown_models = [r for r in shown if r and r[0] == models[0]][0]  # each sha256 shortened, in full in its tooltip
    assert [r[2] for r in shown_models[1:]] == [r[2][:12] + "\u2026" for r in models[1:]]
    tips = browser.execute_script("return [...document.querySelectorAll('div.prose abbr')].map(a => a.title)")
    assert tips == [r[2] for r in models[1:]]
    fits_in_window(browser, "front page")
    browser.save_screenshot(tmp_path / "front_page.png")

    items = browser.execute_script("return Object.values(results).map(r => [r.name, r.caption])")
    assert len(items) >= 12 and all(caption.strip() for _, caption in items), items

    browser.find_element(By.LINK_TEXT, "Samples").click()
    sample = results / "chimeras"
    regions = view_in_page(browser, wait, "viral regions", "table")
    assert regions == [rows(sample / "viral_regions.tsv")]
    browser.save_screenshot(tmp_path / "viral_regions.png")
    assert "Viral regions of sample chimeras" in caption_of(browser, wait, "viral regions", "table")
    summary = view_in_page(browser, wait, "sequence summary", "table", fits_in_window)[0]
    expected = rows(sample / "sequence_summary.tsv")
    assert summary[0] == expected[0] and sorted(summary[1:]) == sorted(expected[1:])
    call = summary[0].index("call")
    assert [r[call] for r in summary[1:3]] == ["viral", "viral"]  # viral calls first
    assert "Sequence summary of sample chimeras" in caption_of(browser, wait, "sequence summary", "table")

    item_row(browser, "virus score along sequences", "plot").find_element(By.CSS_SELECTOR, "a[iconname=eye]").click()
    assert wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('img[src^=\"data:image/png\"]'); return i && i.complete && i.naturalWidth"))
    browser.save_screenshot(tmp_path / "along_plot.png")
