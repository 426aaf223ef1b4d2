# Per-sample results (tables, viral regions, tracks, viral sequences, the original's files, plots, the
# tables as pages for the report), then the run's overview of all samples, models and parameters. The
# overview waits only for the samples whose front end went through: the others are listed, with why.
# Every output's name and path come from virnucpro.layout.


rule summarize:
    input:
        predictions=rules.classify.output[0],
        manifest=rules.prepare.output.manifest,
        fasta=sample_input,
    output:
        **{
            name: shown(output, f"{RESULTS}/{{sample}}", "Samples", "{sample}")
            for name, output in layout.SUMMARY.items()
        },
    log:
        sample_file("logs/summarize.log"),
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        fragment_size=FRAGMENT_SIZE,
        settings=dict(
            threshold=config["summary"]["viral_fraction_threshold"],
            top_sequences=config["summary"]["plot_top_sequences"],
            max_gap_fragments=config["regions"]["max_gap_fragments"],
            min_viral_fragments=config["regions"]["min_viral_fragments"],
            max_table_rows=config["report"]["max_table_rows"],
        ),
        max_bp=config["max_record_bp"],
    script:
        "../../scripts/summarize.py"


rule overview:
    input:
        status=[status_file(s) for s in SAMPLES],
        sequences=finished(layout.SUMMARY["sequence_summary"].path),
        regions=finished(layout.SUMMARY["viral_regions"].path),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        classifier=note("classifier"),
        receipts=finished_receipts,
        float8_check=[pool_file(layout.FLOAT8_DECISION, "samples")] if FLOAT8 else [],
    output:
        **{
            name: shown(output, RESULTS, "Overview")
            for name, output in layout.OVERVIEW.items()
        },
    log:
        f"{RESULTS}/logs/overview.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        samples=list(SAMPLES),
        # every sample's folder names the run's provenance: written by this step where its text changed,
        # not an output (Snakemake would remove and rewrite it, touching every sample's folder)
        pointers=[sample_file(layout.PROVENANCE_POINTER, s) for s in SAMPLES],
        unfinished=lambda wildcards: list(front_end_failed()),  # for the report's front page
        settings=run_settings(),
    script:
        "../../scripts/overview.py"
