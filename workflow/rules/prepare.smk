# Front end: fragments and stop-free six-frame translations, then shards balanced by token count.


rule prepare:
    input:
        fasta=sample_input,
    output:
        dna=f"{RESULTS}/{{sample}}/prepare/frames.fna",
        protein=f"{RESULTS}/{{sample}}/prepare/frames.faa",
        manifest=f"{RESULTS}/{{sample}}/prepare/sequences.tsv",
    log:
        f"{RESULTS}/{{sample}}/logs/prepare.log",
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        fragment_size=FRAGMENT_SIZE,
    script:
        "../../scripts/prepare.py"


checkpoint shard:
    input:
        dna=rules.prepare.output.dna,
        protein=rules.prepare.output.protein,
    output:
        directory(f"{RESULTS}/{{sample}}/shards"),
    log:
        f"{RESULTS}/{{sample}}/logs/shard.log",
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        tokens_per_shard=config["shards"]["tokens_per_shard"],
    script:
        "../../scripts/shard.py"
