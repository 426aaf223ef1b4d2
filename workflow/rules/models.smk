# Model files: downloaded and verified into models.dir, unless the config points at files on disk; then
# noted (models.dir/notes/): verified first when placed by hand where the download would be, checksummed,
# and ESM-2 and the original classifier converted once into the form the steps load fast
# (models.dir/converted/, named by the source's sha256). Steps read models from the notes only; the
# embedding plan and the GPU jobs need the encoders' notes, so a model that fails stops the run before them.


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


# One note rule per kind of model, alike but for the kind: convert_esm2, check_dnabert_s, convert_classifier.
for _kind, _rule in (
    ("esm2", "convert_esm2"),
    ("dnabert_s", "check_dnabert_s"),
    ("classifier", "convert_classifier"),
):

    rule:
        name:
            _rule
        input:
            model_path(_kind),
        output:
            note(_kind),
        log:
            f"{MODELS}/logs/{_rule}.log",
        localrule: True
        conda:
            "../../envs/virnucpro.yaml"
        threads: 1
        params:
            kind=_kind,
            stamp=stamp(_kind),
            float8=_kind == "esm2" and FLOAT8,  # ESM-2's float8 file too (embed.precision)
        script:
            "../../scripts/note_model.py"


rule models:
    input:
        note("esm2"),
        note("dnabert_s"),
        note("classifier"),
    localrule: True
