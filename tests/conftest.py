"""Shared pytest set-up: GPU tests skip cleanly where CUDA is absent, and Triton kernels run through
Triton's CPU interpreter there; SLURM tests skip where no cluster answers, unless --require-slurm (CI)
turns that into a failure; browser tests skip where headless Chromium, its driver or selenium is
missing, unless --require-browser (CI) does; Triton tests (marked `triton`) skip where triton is not
installed, unless --require-triton (CI) does; tiny models for workflow runs and for the embedding
stage run directly."""

import importlib.util
import os
import shutil
import subprocess

import pytest
import torch

if not torch.cuda.is_available():  # Triton kernels run through its CPU interpreter (tests/test_kernels.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        import triton.runtime.interpreter as _interpreter
    except ImportError:
        _interpreter = None
    _patch_tensor = getattr(_interpreter, "_patch_lang_tensor", None)
    if _patch_tensor is not None:  # Triton 3.6 calls int() on 1-element arrays (loop bounds): NumPy >= 2.4 refuses

        def _patch_lang_tensor(tensor, scope):
            _patch_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(())))

        _interpreter._patch_lang_tensor = _patch_lang_tensor

ESM_DIM, DNA_DIM = 64, 96


def pytest_addoption(parser):
    parser.addoption("--require-slurm", action="store_true",
                     help="fail SLURM tests instead of skipping them when no cluster answers")
    parser.addoption("--require-browser", action="store_true",
                     help="fail browser tests instead of skipping them when Chromium or selenium is missing")
    parser.addoption("--require-triton", action="store_true",
                     help="fail Triton tests instead of skipping them when triton is not installed")


def pytest_configure(config):
    config.addinivalue_line("markers", "triton: runs the Triton kernels (through Triton's CPU interpreter where "
                                       "there is no GPU); skipped where triton is not installed")


BROWSER = ("chromium", "chromedriver")  # Debian packages chromium and chromium-driver


def browser_found():
    return all(shutil.which(p) for p in BROWSER) and importlib.util.find_spec("selenium") is not None


def triton_found():
    return importlib.util.find_spec("triton") is not None


def slurm_answers():
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_slurm = pytest.mark.skip(reason="no SLURM cluster answers (CI starts one: .ci/slurm.sh)")
    skip_browser = pytest.mark.skip(reason="no headless Chromium (apt-get install chromium chromium-driver) "
                                           "or no selenium (CI installs both)")
    skip_triton = pytest.mark.skip(reason="triton is not installed (the test extra installs it on Linux x86_64; "
                                          "CI requires it)")
    has_slurm = None
    for item in items:
        if "browser" in item.keywords and not config.getoption("--require-browser") and not browser_found():
            item.add_marker(skip_browser)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "triton" in item.keywords and not config.getoption("--require-triton") and not triton_found():
            item.add_marker(skip_triton)
        if "slurm" in item.keywords and not config.getoption("--require-slurm"):
            has_slurm = slurm_answers() if has_slurm is None else has_slurm
            if not has_slurm:
                item.add_marker(skip_slurm)


def pytest_runtest_setup(item):
    """A Triton test that was not skipped (above) but cannot run fails, saying why."""
    if "triton" in item.keywords and not triton_found():
        pytest.fail("Triton test required (--require-triton) but triton is not installed", pytrace=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Config overrides naming a tiny ESM-2 checkpoint, DNABERT-S snapshot and original-format
    500_model.pth, all in their real on-disk formats."""
    from tests.original_classifier import make_original_classifier
    from tests.tiny_dnabert import build_tiny_dnabert
    from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint

    d = tmp_path_factory.mktemp("tiny_models")
    esm = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=2, embed_dim=ESM_DIM, heads=4), d)
    dnabert, _, _ = build_tiny_dnabert(d / "DNABERT-S-tiny", hidden_size=DNA_DIM)
    classifier = d / "500_model.pth"
    make_original_classifier(classifier, input_dim=DNA_DIM + ESM_DIM)
    return {"models.esm2": str(esm), "models.dnabert_s": str(dnabert), "models.classifier": str(classifier)}


@pytest.fixture(scope="module")
def embed_models(tmp_path_factory):
    """(tiny ESM-2 checkpoint, tiny DNABERT-S snapshot directory, its state dict) for `virnucpro plan`
    and `virnucpro embed` run directly (tests/embed_runs.py); one set per test module."""
    from tests.tiny_dnabert import build_tiny_dnabert
    from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint

    d = tmp_path_factory.mktemp("models")
    esm_path = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=3, embed_dim=64, heads=4), d)
    dna_dir, state, _ = build_tiny_dnabert(d / "DNABERT-S")
    return esm_path, dna_dir, state


@pytest.fixture(autouse=True)
def thread_settings():
    """`run_step` sets this process's thread variables and torch's thread count: every test gets them
    back as they were, so none leaks into the next."""
    from virnucpro.harness import THREAD_VARIABLES

    saved, threads = {name: os.environ.get(name) for name in THREAD_VARIABLES}, torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
]


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium through chromedriver (selenium), with a fresh profile; nothing it needs is fetched."""
    if not browser_found():
        pytest.fail("browser test required (--require-browser) but chromium, chromedriver or selenium is missing")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
