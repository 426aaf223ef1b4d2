# Front end, per sample: fragments and stop-free six-frame translations.


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
