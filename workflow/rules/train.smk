# Retraining (`snakemake train`): labelled inputs go through the same front end and embedding stage as
# samples (as training sets train-viral-N / train-other-N, in a pool of their own), then the classifier
# is trained on their features.


rule train:
    input:
        viral=training("viral"),
        other=training("other"),
        receipts=training_receipt_list,
    output:
        model=TRAINED,
        metrics=report(
            f"{RESULTS}/{layout.TRAIN_METRICS}",
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
