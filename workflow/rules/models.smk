# Model files: downloaded and verified into models.dir, unless the config points at files on disk.


rule download_esm2:
    output:
        model=f"{MODELS}/{{name}}.pt",
        regression=f"{MODELS}/{{name}}-contact-regression.pt",
    log:
        f"{MODELS}/logs/download_{{name}}.log",
    wildcard_constraints:
        name="esm2_t[0-9]+_[0-9]+[MB]_UR50D",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    params:
        kind="esm2",
    script:
        "../../scripts/download_model.py"


rule download_dnabert_s:
    output:
        model=directory(f"{MODELS}/DNABERT-S"),
    log:
        f"{MODELS}/logs/download_DNABERT-S.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    params:
        kind="dnabert_s",
    script:
        "../../scripts/download_model.py"


rule download_classifier:
    output:
        model=f"{MODELS}/{{size}}_model.pth",
    log:
        f"{MODELS}/logs/download_{{size}}_model.log",
    wildcard_constraints:
        size="300|500",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    params:
        kind="classifier",
    script:
        "../../scripts/download_model.py"


# A classifier given as a converted (or retrained) .safetensors file is used as it is.
if model_path("classifier") != classifier_path():

    rule convert_classifier:
        input:
            model_path("classifier"),
        output:
            classifier_path(),
        log:
            f"{MODELS}/logs/convert_classifier.log",
        localrule: True
        conda:
            "../../envs/virnucpro.yaml"
        script:
            "../../scripts/convert_classifier.py"


rule models:
    input:
        model_path("esm2"),
        model_path("dnabert_s"),
        classifier_path(),
    localrule: True
