# Front end, per sample: fragments and stop-free six-frame translations; a sequence shorter than
# min_length is not cut. A sample whose input is bad gets empty outputs and its error in status.json,
# so that the run's other samples go on.


rule prepare:
    input:
        fasta=sample_input,
    output:
        **{name: sample_file(path) for name, path in layout.PREPARE.items()},
    log:
        sample_file("logs/prepare.log"),
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        fragment_size=FRAGMENT_SIZE,
        max_bp=config["max_record_bp"],
        min_length=config["min_length"],
    script:
        "../../scripts/prepare.py"
