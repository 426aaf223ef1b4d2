# Model files: downloaded and verified into models.dir, unless the config points at files on disk; then
# converted once into the form the steps load fast (models.dir/converted/, named by the source's sha256).


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
        "../../envs/cpu.yaml"
    threads: 1
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
        "../../envs/cpu.yaml"
    threads: 1
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
        "../../envs/cpu.yaml"
    threads: 1
    params:
        kind="classifier",
    script:
        "../../scripts/download_model.py"


rule convert_esm2:
    input:
        model_path("esm2"),
    output:
        f"{MODELS}/converted/esm2.json",
    log:
        f"{MODELS}/logs/convert_esm2.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="esm2",
    script:
        "../../scripts/convert_model.py"


rule convert_classifier:
    input:
        model_path("classifier"),
    output:
        f"{MODELS}/converted/classifier.json",
    log:
        f"{MODELS}/logs/convert_classifier.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="classifier",
    script:
        "../../scripts/convert_model.py"


rule models:
    input:
        model_path("esm2"),
        converted("esm2"),
        model_path("dnabert_s"),
        model_path("classifier"),
        converted("classifier"),
    localrule: True
