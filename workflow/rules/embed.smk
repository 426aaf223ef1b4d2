# The pooled embedding stage of a pool of members (the samples, or the training sets): one plan over
# all of them against the embedding store, then one GPU job per shard running both encoders.

TOKENS_PER_BATCH = {
    "esm2": config["embed"]["esm2_tokens_per_batch"],
    "dnabert_s": config["embed"]["dnabert_tokens_per_batch"],
}
GPU_RESOURCES = dict(
    gpu=1,
    gpu_model=config["resources"]["gpu_model"],
    mem_mb=lambda wildcards, attempt: config["resources"]["gpu_mem_mb"] * attempt,
    runtime=lambda wildcards, attempt: config["resources"]["gpu_runtime_min"] * attempt,
)


# embed.precision float8: the check on the samples' own frames whose decision the plan follows
rule check_float8:
    input:
        dna=expand(sample_file(layout.PREPARE["dna"]), sample=SAMPLES),
        protein=expand(sample_file(layout.PREPARE["protein"]), sample=SAMPLES),
        status=expand(sample_file(layout.PREPARE["status"]), sample=SAMPLES),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        classifier=note("classifier"),
    output:
        decision=pool_file(layout.FLOAT8_DECISION, "samples"),
        table=shown(layout.FLOAT8_TABLE, RESULTS, "Overview"),
    log:
        pool_file("logs/check_float8.log", "samples"),
    conda:
        "../../envs/virnucpro.yaml"
    threads: config["resources"]["gpu_cpus"]
    resources:
        **GPU_RESOURCES,
    params:
        members=list(SAMPLES),
        store=STORE,
        device=config["embed"]["device"],
        check=config["embed"]["float8_check"],
        tokens_per_batch=TOKENS_PER_BATCH,
    script:
        "../../scripts/check_float8.py"


checkpoint plan:
    input:
        dna=prepared("dna"),
        protein=prepared("protein"),
        status=prepared("status"),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
        float8_decision=float8_decision,
    output:
        directory(pool_file(layout.PLAN)),
    log:
        pool_file("logs/plan.log"),
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        members=lambda wildcards: pool_members(wildcards.pool),
        members_dir=lambda wildcards: pool_file(layout.MEMBERS, wildcards.pool),
        store=STORE,
        device=config["embed"]["device"],
        tokens_per_shard=config["shards"]["tokens_per_shard"],
    script:
        "../../scripts/plan.py"


rule embed:
    input:
        proteins=pool_file(f"{layout.PLAN}/{layout.SHARDS}/{{shard}}.faa"),
        nucleotides=pool_file(f"{layout.PLAN}/{layout.SHARDS}/{{shard}}.fna"),
        esm2=note("esm2"),
        dnabert_s=note("dnabert_s"),
    output:
        pool_file(f"{layout.RECEIPTS}/{{shard}}.json"),
    log:
        pool_file("logs/embed/{shard}.log"),
    benchmark:
        pool_file("benchmarks/embed/{shard}.tsv")
    conda:
        "../../envs/virnucpro.yaml"
    threads: config["resources"]["gpu_cpus"]
    resources:
        **GPU_RESOURCES,
    params:
        plan=lambda wildcards: pool_file(layout.PLAN, wildcards.pool),
        lock_stale_s=60 * config["embed"]["lock_stale_minutes"],
        tokens_per_batch=TOKENS_PER_BATCH,
    script:
        "../../scripts/embed.py"


# Every shard of the pool's plan embedded: the list of their receipts. Steps that read the store take it
# as ancient input (common.smk `receipt_list`): they wait for it, but a shard embedded for another member
# (an added sample) does not make them run again.
rule list_receipts:
    input:
        receipts=plan_receipts,
    output:
        pool_file(layout.RECEIPT_LIST),
    log:
        pool_file("logs/list_receipts.log"),
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    script:
        "../../scripts/list_receipts.py"
