"""The workflow used as a module, the way `snakedeploy deploy-workflow` deploys it: a new directory with
a Snakefile holding a `module` directive that points at this repository's workflow/Snakefile, and a
copy of config/. The default target runs there on the tiny models, then the report; every path the
workflow uses for its own files (schemas, scripts, envs, report captions) must resolve from there."""

import pytest

from tests.workflow_runs import assert_complete, deploy, run_deployed

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_deployed_module_runs_to_results_and_report(tmp_path, tiny_models):
    dest = deploy(tmp_path / "analysis", tiny_models)
    run_deployed(dest, "--cores", "2")
    assert_complete(dest)
    run_deployed(dest, "--report", "report.html")
    html = (dest / "report.html").read_text(errors="replace")
    for text in ("which parts of them, are viral", "Samples overview", "sequence_summary.tsv"):
        assert text in html, text
