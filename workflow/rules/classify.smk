# The VirNucPro classifier on every frame of a sample, its features read back from the embedding store.


rule classify:
    input:
        member=lambda wildcards: member_plan(wildcards.sample),
        receipts=lambda wildcards: receipt_list(
            wildcards.sample, sample_file(layout.PREDICTIONS, wildcards.sample)
        ),
        classifier=note("classifier"),
    output:
        sample_file(layout.PREDICTIONS),
    log:
        sample_file("logs/classify.log"),
    conda:
        "../../envs/virnucpro.yaml"
    threads: threads_by_size(rules.prepare.output.protein, mb_per_thread=2, most=8)
    params:
        fragment_size=FRAGMENT_SIZE,
    script:
        "../../scripts/classify.py"
