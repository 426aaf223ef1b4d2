# The pooled embedding stage of a batch of members (the samples, or the training sets): one plan over
# all of them against the embedding store, then one GPU job per shard running both encoders.


# embed.precision float8: the check on the samples' own frames whose decision the plan follows
rule check_float8:
    input:
        dna=expand(f"{RESULTS}/{{sample}}/prepare/frames.fna", sample=SAMPLES),
        protein=expand(f"{RESULTS}/{{sample}}/prepare/frames.faa", sample=SAMPLES),
        status=expand(f"{RESULTS}/{{sample}}/prepare/status.json", sample=SAMPLES),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        classifier=note("classifier"),
    output:
        decision=f"{EMBEDDING}/samples/float8_check.json",
        table=report(
            f"{RESULTS}/float8_check.tsv",
            caption="../report/float8_check.rst",
            category="Overview",
            labels={"result": "float8 check"},
        ),
    log:
        f"{EMBEDDING}/samples/logs/check_float8.log",
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
        members=list(SAMPLES),
        store=STORE,
        device=config["embed"]["device"],
        frames=config["embed"]["float8_check"]["frames"],
        min_call_agreement=config["embed"]["float8_check"]["min_call_agreement"],
        min_cosine=config["embed"]["float8_check"]["min_cosine"],
        esm2_tokens_per_batch=config["embed"]["esm2_tokens_per_batch"],
        dnabert_tokens_per_batch=config["embed"]["dnabert_tokens_per_batch"],
    script:
        "../../scripts/check_float8.py"


checkpoint plan:
    input:
        dna=batch_files("frames.fna"),
        protein=batch_files("frames.faa"),
        status=batch_files("status.json"),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        float8_decision=float8_decision,
    output:
        directory(f"{EMBEDDING}/{{batch}}/plan"),
    log:
        f"{EMBEDDING}/{{batch}}/logs/plan.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        members=lambda wildcards: batch_members(wildcards.batch),
        store=STORE,
        device=config["embed"]["device"],
        tokens_per_shard=config["shards"]["tokens_per_shard"],
        records=lambda wildcards: f"{EMBEDDING}/{wildcards.batch}/members",
    script:
        "../../scripts/plan.py"


rule embed:
    input:
        proteins=f"{EMBEDDING}/{{batch}}/plan/shards/{{shard}}.faa",
        nucleotides=f"{EMBEDDING}/{{batch}}/plan/shards/{{shard}}.fna",
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
    output:
        f"{EMBEDDING}/{{batch}}/done/{{shard}}.json",
    log:
        f"{EMBEDDING}/{{batch}}/logs/embed/{{shard}}.log",
    benchmark:
        f"{EMBEDDING}/{{batch}}/benchmarks/embed/{{shard}}.tsv"
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
        plan=lambda wildcards: f"{EMBEDDING}/{wildcards.batch}/plan",
        lock_stale_s=60 * config["embed"]["lock_stale_minutes"],
        esm2_tokens_per_batch=config["embed"]["esm2_tokens_per_batch"],
        dnabert_tokens_per_batch=config["embed"]["dnabert_tokens_per_batch"],
    script:
        "../../scripts/embed.py"


# Every shard of the batch's plan embedded: the list of their receipts. Steps that read the store take it
# as ancient input (common.smk `embedded`): they wait for it, but a shard embedded for another member
# (an added sample) does not make them run again.
rule embedded:
    input:
        receipts=plan_receipts,
    output:
        f"{EMBEDDING}/{{batch}}/embedded.txt",
    log:
        f"{EMBEDDING}/{{batch}}/logs/embedded.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    script:
        "../../scripts/embedded.py"
