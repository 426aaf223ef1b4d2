# Retraining: labelled inputs go through the same front end and embedding stage as samples (as
# training sets train-viral-N / train-other-N, in a plan of their own), then the classifier is trained
# on their features.


rule train_classifier:
    input:
        viral_dna=training("viral", "fna"),
        viral_protein=training("viral", "faa"),
        viral_member=training("viral", "member"),
        viral_embedded=training("viral", "embedded"),
        other_dna=training("other", "fna"),
        other_protein=training("other", "faa"),
        other_member=training("other", "member"),
        other_embedded=training("other", "embedded"),
    output:
        model=f"{RESULTS}/train/{FRAGMENT_SIZE}_model.safetensors",
        metrics=report(
            f"{RESULTS}/train/metrics.tsv",
            caption="../report/train_metrics.rst",
            category="Training",
            labels={"table": "held-out metrics"},
        ),
    log:
        f"{RESULTS}/train/train.log",
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        fragment_size=FRAGMENT_SIZE,
        seed=config["train"]["seed"],
    script:
        "../../scripts/train.py"


rule train:
    input:
        rules.train_classifier.output,
    localrule: True
