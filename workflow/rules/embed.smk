# GPU stages, one job per shard: ESM-2 protein and DNABERT-S nucleotide embeddings of every frame.


rule embed_protein:
    input:
        frames=f"{RESULTS}/{{sample}}/shards/{{shard}}.faa",
        model=model_path("esm2"),
    output:
        f"{RESULTS}/{{sample}}/embeddings/esm2/{{shard}}.h5",
    log:
        f"{RESULTS}/{{sample}}/logs/embed_protein/{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{sample}}/benchmarks/embed_protein/{{shard}}.tsv"
    conda:
        "../../envs/virnucpro.yaml"
    threads: config["resources"]["gpu_cpus"]
    resources:
        gpu=1,
        gpu_model=config["resources"]["gpu_model"],
        mem_mb=lambda wildcards, attempt: config["resources"]["gpu_mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: config["resources"]["gpu_runtime_min"]
        * attempt,
    params:
        device=config["embed"]["device"],
        tokens_per_batch=config["embed"]["esm2_tokens_per_batch"],
    script:
        "../../scripts/embed_protein.py"


rule embed_dna:
    input:
        frames=f"{RESULTS}/{{sample}}/shards/{{shard}}.fna",
        model=model_path("dnabert_s"),
    output:
        f"{RESULTS}/{{sample}}/embeddings/dnabert_s/{{shard}}.h5",
    log:
        f"{RESULTS}/{{sample}}/logs/embed_dna/{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{sample}}/benchmarks/embed_dna/{{shard}}.tsv"
    conda:
        "../../envs/virnucpro.yaml"
    threads: config["resources"]["gpu_cpus"]
    resources:
        gpu=1,
        gpu_model=config["resources"]["gpu_model"],
        mem_mb=lambda wildcards, attempt: config["resources"]["gpu_mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: config["resources"]["gpu_runtime_min"]
        * attempt,
    params:
        device=config["embed"]["device"],
        tokens_per_batch=config["embed"]["dnabert_tokens_per_batch"],
    script:
        "../../scripts/embed_dna.py"
