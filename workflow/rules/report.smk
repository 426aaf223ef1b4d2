# Per-fragment and per-sequence tables, viral sequences and plots for the Snakemake report.


rule summarize:
    input:
        predictions=rules.classify.output[0],
        manifest=rules.prepare.output.manifest,
        fasta=sample_input,
    output:
        fragments=report(
            f"{RESULTS}/{{sample}}/fragment_calls.tsv",
            caption="../report/fragment_calls.rst",
            category="Tables",
            subcategory="{sample}",
            labels={"sample": "{sample}", "table": "fragment calls"},
        ),
        sequences=report(
            f"{RESULTS}/{{sample}}/sequence_summary.tsv",
            caption="../report/sequence_summary.rst",
            category="Tables",
            subcategory="{sample}",
            labels={"sample": "{sample}", "table": "sequence summary"},
        ),
        viral=f"{RESULTS}/{{sample}}/viral.fna",
        histogram=report(
            f"{RESULTS}/{{sample}}/plots/score_histogram.png",
            caption="../report/score_histogram.rst",
            category="Plots",
            subcategory="{sample}",
            labels={"sample": "{sample}", "plot": "virus score histogram"},
        ),
        along=report(
            f"{RESULTS}/{{sample}}/plots/score_along_sequences.png",
            caption="../report/score_along_sequences.rst",
            category="Plots",
            subcategory="{sample}",
            labels={"sample": "{sample}", "plot": "virus score along sequences"},
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
    script:
        "../../scripts/summarize.py"
