# Per-sample results (tables, viral regions, tracks, viral sequences, the original's files, plots, the
# tables as pages for the report), then the run's overview of all samples, models and parameters. The
# overview waits only for the samples whose front end went through: the others are listed, with why.


rule summarize:
    input:
        predictions=rules.classify.output[0],
        manifest=rules.prepare.output.manifest,
        fasta=sample_input,
    output:
        fragments=report(
            f"{RESULTS}/{{sample}}/fragment_calls.tsv",
            caption="../report/fragment_calls.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "fragment calls", "form": "TSV (download)"},
        ),
        sequences=report(
            f"{RESULTS}/{{sample}}/sequence_summary.tsv",
            caption="../report/sequence_summary_tsv.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "sequence summary", "form": "TSV (download)"},
        ),
        regions=report(
            f"{RESULTS}/{{sample}}/viral_regions.tsv",
            caption="../report/viral_regions_tsv.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "viral regions", "form": "TSV (download)"},
        ),
        viral=f"{RESULTS}/{{sample}}/viral.fna",
        regions_fasta=report(
            f"{RESULTS}/{{sample}}/viral_regions.fna",
            caption="../report/viral_regions_fna.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "viral region sequences", "form": "FASTA (download)"},
        ),
        regions_gff=report(
            f"{RESULTS}/{{sample}}/viral_regions.gff3",
            caption="../report/viral_regions_gff.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "viral regions", "form": "GFF3 (download)"},
        ),
        score_track=report(
            f"{RESULTS}/{{sample}}/tracks/virus_score.bedGraph",
            caption="../report/virus_score_track.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "virus score track", "form": "bedGraph (download)"},
        ),
        region_track=report(
            f"{RESULTS}/{{sample}}/tracks/viral_regions.bed",
            caption="../report/viral_regions_track.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "viral regions track", "form": "BED (download)"},
        ),
        original_predictions=f"{RESULTS}/{{sample}}/prediction_results.txt",
        original_calls=f"{RESULTS}/{{sample}}/prediction_results_highestscore.csv",
        histogram=report(
            f"{RESULTS}/{{sample}}/plots/score_histogram.png",
            caption="../report/score_histogram.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "virus score histogram", "form": "plot"},
        ),
        along=report(
            f"{RESULTS}/{{sample}}/plots/score_along_sequences.png",
            caption="../report/score_along_sequences.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "virus score along sequences", "form": "plot"},
        ),
        sequences_view=report(
            f"{RESULTS}/{{sample}}/report/sequence_summary.html",
            caption="../report/sequence_summary.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "sequence summary", "form": "table"},
        ),
        regions_view=report(
            f"{RESULTS}/{{sample}}/report/viral_regions.html",
            caption="../report/viral_regions.rst",
            category="Samples",
            subcategory="{sample}",
            labels={"result": "viral regions", "form": "table"},
        ),
    log:
        f"{RESULTS}/{{sample}}/logs/summarize.log",
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        threshold=config["summary"]["viral_fraction_threshold"],
        top_sequences=config["summary"]["plot_top_sequences"],
        fragment_size=FRAGMENT_SIZE,
        max_gap_fragments=config["regions"]["max_gap_fragments"],
        min_viral_fragments=config["regions"]["min_viral_fragments"],
        max_table_rows=config["report"]["max_table_rows"],
        max_bp=config["max_record_bp"],
    script:
        "../../scripts/summarize.py"


rule overview:
    input:
        status=[status_file(s) for s in SAMPLES],
        sequences=finished("sequence_summary.tsv"),
        regions=finished("viral_regions.tsv"),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        classifier=note("classifier"),
        receipts=finished_receipts,
        float8_check=[f"{EMBEDDING}/samples/float8_check.json"] if FLOAT8 else [],
    output:
        overview=report(
            f"{RESULTS}/overview.tsv",
            caption="../report/overview.rst",
            category="Overview",
            labels={"result": "all samples"},
        ),
        unfinished=report(
            f"{RESULTS}/unfinished.tsv",
            caption="../report/unfinished.rst",
            category="Overview",
            labels={"result": "samples that did not finish"},
        ),
        models=report(
            f"{RESULTS}/models.tsv",
            caption="../report/models.rst",
            category="Overview",
            labels={"result": "models and checksums"},
        ),
        parameters=report(
            f"{RESULTS}/parameters.tsv",
            caption="../report/parameters.rst",
            category="Overview",
            labels={"result": "run parameters"},
        ),
        all_sequences=report(
            f"{RESULTS}/all_sequences.tsv",
            caption="../report/all_sequences.rst",
            category="Overview",
            labels={"result": "sequences of all samples"},
        ),
        all_regions=report(
            f"{RESULTS}/all_viral_regions.tsv",
            caption="../report/all_viral_regions.rst",
            category="Overview",
            labels={"result": "viral regions of all samples"},
        ),
        provenance=report(
            f"{RESULTS}/provenance.json",
            caption="../report/provenance.rst",
            category="Overview",
            labels={"result": "provenance"},
        ),
        # HTML tables for the report's pages (reasons are not markup; hashes shortened)
        overview_view=f"{RESULTS}/report/overview.html",
        unfinished_view=f"{RESULTS}/report/unfinished.html",
        models_view=f"{RESULTS}/report/models.html",
        provenance_view=f"{RESULTS}/report/provenance.html",
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
        pointers=expand(f"{RESULTS}/{{sample}}/provenance.txt", sample=list(SAMPLES)),
        unfinished=lambda wildcards: list(front_end_failed()),
        settings=run_settings(),
    script:
        "../../scripts/overview.py"
