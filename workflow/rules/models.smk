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
        "../../envs/virnucpro.yaml"
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
        "../../envs/virnucpro.yaml"
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
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        kind="classifier",
    script:
        "../../scripts/download_model.py"


# The note of each kind of model (esm2, dnabert_s, classifier), made from the file the config names.
rule note_model:
    input:
        lambda wildcards: model_path(wildcards.kind),
    output:
        f"{MODELS}/notes/{{kind}}-{{source}}.json",
    log:
        f"{MODELS}/logs/note_model_{{kind}}-{{source}}.log",
    wildcard_constraints:
        kind="|".join(MODEL_KINDS),
        source="[0-9a-f]{8}",
    localrule: True
    conda:
        "../../envs/virnucpro.yaml"
    threads: 1
    params:
        stamp=lambda wildcards: stamp(wildcards.kind),
        float8=FLOAT8,  # the float8 form too, of a kind that has one (ESM-2; embed.precision)
    script:
        "../../scripts/note_model.py"


rule models:
    input:
        note("esm2"),
        note("dnabert_s"),
        note("classifier"),
    localrule: True
