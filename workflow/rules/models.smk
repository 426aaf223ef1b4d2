# Model files: downloaded and verified into models.dir, unless the config points at files on disk; then
# noted (models.dir/notes/): checksummed, and ESM-2 and the original classifier converted once into the
# form the steps load fast (models.dir/converted/, named by the source's sha256). Steps read models from
# the notes only.


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
        note("esm2"),
    log:
        f"{MODELS}/logs/convert_esm2.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="esm2",
        stamp=stamp("esm2"),
    script:
        "../../scripts/note_model.py"


rule check_dnabert_s:
    input:
        model_path("dnabert_s"),
    output:
        note("dnabert_s"),
    log:
        f"{MODELS}/logs/check_dnabert_s.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="dnabert_s",
        stamp=stamp("dnabert_s"),
    script:
        "../../scripts/note_model.py"


rule convert_classifier:
    input:
        model_path("classifier"),
    output:
        note("classifier"),
    log:
        f"{MODELS}/logs/convert_classifier.log",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="classifier",
        stamp=stamp("classifier"),
    script:
        "../../scripts/note_model.py"


rule models:
    input:
        note("esm2"),
        note("dnabert_s"),
        note("classifier"),
    localrule: True
