# The VirNucPro classifier on every frame of a sample, its features read back from the embedding store.


rule classify:
    input:
        dna=rules.prepare.output.dna,
        protein=rules.prepare.output.protein,
        member=lambda wildcards: member_record(wildcards.sample),
        embedded=lambda wildcards: embedded(
            wildcards.sample, f"{RESULTS}/{wildcards.sample}/prediction_results.tsv"
        ),
        classifier=note("classifier"),
    output:
        f"{RESULTS}/{{sample}}/prediction_results.tsv",
    log:
        f"{RESULTS}/{{sample}}/logs/classify.log",
    conda:
        "../../envs/virnucpro.yaml"
    threads: threads_by_size(rules.prepare.output.protein, mb_per_thread=2, most=8)
    params:
        fragment_size=FRAGMENT_SIZE,
    script:
        "../../scripts/classify.py"
