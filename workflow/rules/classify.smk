# Features (DNABERT-S then ESM-2, 3328 values per frame) and the VirNucPro classifier, per shard,
# then the per-frame table of the whole sample in input order.


rule merge:
    input:
        dna=rules.embed_dna.output[0],
        protein=rules.embed_protein.output[0],
        frames=rules.embed_protein.input.frames,
    output:
        f"{RESULTS}/{{sample}}/features/{{shard}}.h5",
    log:
        f"{RESULTS}/{{sample}}/logs/merge/{{shard}}.log",
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    script:
        "../../scripts/merge.py"


rule classify:
    input:
        features=rules.merge.output[0],
        model=classifier_path(),
    output:
        f"{RESULTS}/{{sample}}/predictions/{{shard}}.tsv",
    log:
        f"{RESULTS}/{{sample}}/logs/classify/{{shard}}.log",
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        fragment_size=FRAGMENT_SIZE,
    script:
        "../../scripts/classify.py"


rule collect_predictions:
    input:
        predictions=shard_outputs("predictions/{shard}.tsv"),
        frames=rules.prepare.output.protein,
    output:
        f"{RESULTS}/{{sample}}/prediction_results.tsv",
    log:
        f"{RESULTS}/{{sample}}/logs/collect_predictions.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    script:
        "../../scripts/collect_predictions.py"
