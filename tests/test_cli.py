"""The `virnucpro` command: every subcommand's help page says what it does and explains every option; its
defaults are the package's (and config/config.yaml's); a subcommand does what the workflow's script does."""

import inspect
import json
import re
import runpy
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from virnucpro.cli import build_parser, main
from virnucpro.io.checksums import SUFFIX, record_path
from virnucpro.io.seqio import MAX_RECORD_BP
from virnucpro.layout import SUMMARY

ROOT = Path(__file__).resolve().parents[1]


def default(function, name):
    """The default of parameter `name` of `function`."""
    return inspect.signature(function).parameters[name].default


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `virnucpro ARGV...`."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_page_describes_the_step_and_every_option(name, capsys):
    page = subcommands()[name]
    undocumented = [a.dest for a in page._actions if not a.help and a.dest != "help"]
    assert undocumented == [] and page.description
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert page.description.split(".")[0] in " ".join(capsys.readouterr().out.split())


def test_every_rule_script_has_a_subcommand():
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    names = {}  # every script: its name with dashes
    bookkeeping = {"list_receipts"}  # lists a plan's receipts for the workflow's own DAG: nothing to run by hand
    assert {names.get(s, s.replace("_", "-")) for s in scripts - bookkeeping} <= set(subcommands())


def test_the_config_holds_the_package_defaults():
    """config.yaml sets what virnucpro.defaults sets, and the functions and the command take those."""
    from virnucpro import defaults
    from virnucpro.steps.check_float8 import check_float8
    from virnucpro.steps.plan import plan
    from virnucpro.steps.prepare import cut_and_translate, prepare
    from virnucpro.steps.summarize import Settings
    from virnucpro.steps.train import train

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def same(want, got, where=""):
        for key, value in want.items():
            if isinstance(value, dict):
                same(value, got[key], f"{where}{key}.")
            else:
                assert got[key] == value, f"{where}{key}"

    same(defaults.CONFIG, config)
    assert (Settings().threshold, Settings().top_sequences) == (defaults.VIRAL_FRACTION_THRESHOLD,
                                                                defaults.PLOT_TOP_SEQUENCES)
    for name in ("max_gap_fragments", "min_viral_fragments", "max_table_rows"):
        assert getattr(Settings(), name) == getattr(defaults, name.upper())
    assert default(plan, "tokens_per_shard") == defaults.TOKENS_PER_SHARD
    assert default(check_float8, "check") == config["embed"]["float8_check"]
    assert MAX_RECORD_BP == defaults.MAX_RECORD_BP
    # min_length: null (the fragment size) in the config, the package and the CLI
    assert default(prepare, "min_length") is default(cut_and_translate, "min_length") is defaults.MIN_LENGTH is None
    assert schema["properties"]["min_length"]["type"] == ["integer", "null"] and "min_length" in schema["required"]
    assert build_parser().parse_args(["prepare", "in.fa", "--fragment-size", "300", "--out-dna", "d",
                                      "--out-protein", "p"]).min_length is config["min_length"]
    assert default(train, "seed") == defaults.TRAIN_SEED
    assert schema["properties"]["fragment_size"]["enum"] == list(defaults.FRAGMENT_SIZES)
    args = build_parser().parse_args(["summarize", "--predictions", "p", "--manifest", "m", "--fasta", "f",
                                      "--fragment-size", "500", "--out-dir", "o"])
    assert (args.threshold, args.top_sequences, args.max_gap_fragments, args.min_viral_fragments) == (
        config["summary"]["viral_fraction_threshold"], config["summary"]["plot_top_sequences"],
        config["regions"]["max_gap_fragments"], config["regions"]["min_viral_fragments"])


def test_convert_model_writes_the_note_and_checksum_records_of_the_rules_script(tmp_path, capsys):
    from tests.tiny_dnabert import build_tiny_dnabert

    snapshot, _, _ = build_tiny_dnabert(tmp_path / "DNABERT-S")
    rule_note = tmp_path / "models" / "notes" / "dnabert_s-rule.json"
    snakemake = SimpleNamespace(output=[str(rule_note)], input=[str(snapshot)], log=[str(tmp_path / "rule.log")],
                                wildcards=SimpleNamespace(kind="dnabert_s"), params=SimpleNamespace(float8=False),
                                threads=1)
    runpy.run_path(str(ROOT / "scripts" / "note_model.py"), init_globals={"snakemake": snakemake})
    records = list(Path(snapshot).glob(f"*{SUFFIX}"))
    assert records
    for record in records:
        record.unlink()  # the CLI must write them again
    cli_note = tmp_path / "cli.json"
    rc, out, _ = run_cli(capsys, "note-model", "dnabert_s", snapshot, "--models-dir", tmp_path / "models",
                         "--out", cli_note)
    assert rc == 0 and out.strip() == str(Path(snapshot).resolve())
    assert json.loads(cli_note.read_text()) == json.loads(rule_note.read_text())
    assert record_path(snapshot / "config.json").is_file()


def test_prepare_refuses_a_record_longer_than_the_limit_in_one_line(tmp_path, capsys):
    (tmp_path / "in.fa").write_text(">long\n" + "ACGT" * 200 + "\n")
    rc, _, err = run_cli(capsys, "prepare", tmp_path / "in.fa", "--fragment-size", 300, "--out-dna", tmp_path / "d.fna",
                         "--out-protein", tmp_path / "p.faa", "--max-record-bp", 799)
    assert rc == 1 and err.count("\n") == 1 and "record 'long'" in err and "longer than 799 bp" in err
    assert not (tmp_path / "d.fna").exists()
    assert run_cli(capsys, "prepare", tmp_path / "in.fa", "--fragment-size", 300, "--out-dna", tmp_path / "d.fna",
                   "--out-protein", tmp_path / "p.faa", "--max-record-bp", 800)[0] == 0


def test_prepare_min_length_leaves_short_records_uncut(tmp_path, capsys):
    (tmp_path / "in.fa").write_text(">tiny\nAAA\n>long\n" + "GCC" * 100 + "\n")
    for option, tiny in (([], "tiny\t3\t0\t0"), (["--min-length", 0], "tiny\t3\t1\t2"), (["--min-length", 3], "tiny\t3\t1\t2")):
        rc, _, _ = run_cli(capsys, "prepare", tmp_path / "in.fa", "--fragment-size", 300, "--out-dna", tmp_path / "d.fna",
                           "--out-protein", tmp_path / "p.faa", "--manifest", tmp_path / "m.tsv", *option)
        assert rc == 0 and (tmp_path / "m.tsv").read_text().splitlines()[1] == tiny, option
    rc, _, err = run_cli(capsys, "prepare", tmp_path / "in.fa", "--fragment-size", 300, "--out-dna", tmp_path / "d.fna",
                         "--out-protein", tmp_path / "p.faa", "--min-length", -5)
    assert rc == 1 and err.count("\n") == 1 and "min_length must be a whole number of bp >= 0 (or null), not -5" in err


def test_every_command_of_the_readme_parses_and_every_subcommand_is_there():
    """The README's block of step commands: each line parses (optional parts in brackets taken), and
    every subcommand has a line."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("### The steps as commands"):]
    block = block[block.index("```bash") + len("```bash"):]
    block = re.sub(r"\\\n\s*", " ", block[:block.index("```")])
    parser, seen = build_parser(), set()
    for line in block.strip().splitlines():
        line = re.sub(r"\[([^\]]*)\]", lambda m: "" if "..." in m.group(1) else m.group(1), line.split("  #")[0])
        argv = shlex.split(line)[1:]
        parser.parse_args(argv)
        seen.add(argv[0])
    assert seen == set(subcommands())


def test_prepare_with_a_status_records_bad_input_as_the_workflow_does(tmp_path, capsys):
    (tmp_path / "bad.fa").write_text("no header line\n")
    out = ["--fragment-size", 300, "--out-dna", tmp_path / "d.fna", "--out-protein", tmp_path / "p.faa",
           "--manifest", tmp_path / "m.tsv"]
    rc, _, err = run_cli(capsys, "prepare", tmp_path / "bad.fa", *out)
    assert rc == 1 and err.count("\n") == 1 and "bad.fa" in err and not (tmp_path / "d.fna").exists()
    rc, _, _ = run_cli(capsys, "prepare", tmp_path / "bad.fa", *out, "--status", tmp_path / "status.json")
    status = json.loads((tmp_path / "status.json").read_text())
    assert rc == 0 and status["ok"] is False and "bad.fa" in status["error"]
    assert all((tmp_path / f).read_bytes() == b"" for f in ("d.fna", "p.faa", "m.tsv"))


def test_plan_leaves_out_a_sample_whose_status_says_its_input_was_bad(tmp_path, capsys, tiny_models):
    frames = {}
    for name, text in (("good", ">s1\n" + "ACGTTGCAAT" * 60 + "\n"), ("bad", "no header line\n")):
        (tmp_path / f"{name}.fa").write_text(text)
        frames[name] = (tmp_path / f"{name}.fna", tmp_path / f"{name}.faa")
        assert run_cli(capsys, "prepare", tmp_path / f"{name}.fa", "--fragment-size", 300, "--out-dna", frames[name][0],
                       "--out-protein", frames[name][1], "--status", tmp_path / f"{name}.json")[0] == 0
    models = ["--esm2", tiny_models["models.esm2"], "--dnabert-s", tiny_models["models.dnabert_s"],
              "--models-dir", tmp_path / "models", "--store", tmp_path / "store", "--device", "cpu"]
    samples = [a for name, (dna, protein) in frames.items() for a in ("--sample", name, dna, protein)]
    rc, _, err = run_cli(capsys, "plan", *samples, *models, "--status", "other", tmp_path / "bad.json", "--out", tmp_path / "p0")
    assert rc == 1 and "--status other: no --sample of that name" in err
    assert run_cli(capsys, "plan", *samples, *models, "--status", "bad", tmp_path / "bad.json", "--out", tmp_path / "plan")[0] == 0
    bad = json.loads((tmp_path / "members" / "bad.json").read_text())  # beside the plan by default
    good = json.loads((tmp_path / "members" / "good.json").read_text())
    assert bad["skipped"] == json.loads((tmp_path / "bad.json").read_text())["error"] and bad["frames"] == 0
    assert good["frames"] > 0 and "skipped" not in good


def test_summarize_writes_every_per_sample_file_of_the_workflow_under_its_name(tmp_path, capsys):
    """`virnucpro summarize` writes, under the workflow's names (virnucpro.layout.SUMMARY, which the rule's
    outputs come from), every per-sample result the summarize rule makes; the region FASTA and GFF3 name
    the same regions."""
    import numpy as np

    from virnucpro.io.seqio import read_fasta
    from virnucpro.steps.prepare import cut_and_translate

    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
    seq = "".join(np.random.default_rng(3).choice(sense, 700))
    (tmp_path / "in.fa").write_text(f">c1 a contig\n{seq}\n")
    cut_and_translate(tmp_path / "in.fa", 500, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "m.tsv")
    rows = [f"{fid}\tvirus\t0.2\t0.8\n" for fid, _ in read_fasta(tmp_path / "f.faa")]
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(rows))
    rc, _, err = run_cli(capsys, "summarize", "--predictions", tmp_path / "p.tsv", "--manifest", tmp_path / "m.tsv",
                         "--fasta", tmp_path / "in.fa", "--fragment-size", "500", "--out-dir", tmp_path / "out",
                         "--sample", "s")
    assert rc == 0, err
    names = {output.path for output in SUMMARY.values()}
    assert {"viral_regions.fna", "viral_regions.gff3"} <= names and len(names) == 14
    assert {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()} == names
    assert dict(read_fasta(tmp_path / "out" / "viral_regions.fna")) == {"c1|viral_region_1_2100": seq}
    assert "\tviral_sequence\t1\t2100\t0.800000\t.\t.\tID=c1|viral_region_1_2100;" in (
        tmp_path / "out" / "viral_regions.gff3").read_text()
    rc, _, err = run_cli(capsys, "summarize", "--predictions", tmp_path / "p.tsv", "--manifest", tmp_path / "m.tsv",
                         "--fasta", tmp_path / "in.fa", "--fragment-size", "500", "--out-dir", tmp_path / "short",
                         "--max-record-bp", "2000")  # reaches the viral FASTA's reader
    assert rc != 0 and "in.fa: record 'c1'" in err and "2,000" in err, err
    assert [p for p in (tmp_path / "short").rglob("*") if p.is_file()] == []
