# Retraining: labelled inputs go through the same front end, shards and embeddings as samples
# (as training sets train-viral-N / train-other-N), then the classifier is trained on their features.


rule train_classifier:
    input:
        viral=training_features("viral"),
        other=training_features("other"),
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
    params:
        fragment_size=FRAGMENT_SIZE,
        seed=config["train"]["seed"],
    script:
        "../../scripts/train.py"


rule train:
    input:
        rules.train_classifier.output,
    localrule: True
