"""The `virnucpro` command: every subcommand's help page says what it does and explains every option."""

import pytest

from virnucpro.cli import build_parser, main


def subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_page_describes_the_step_and_every_option(name, capsys):
    page = subcommands()[name]
    undocumented = [a.dest for a in page._actions if not a.help and a.dest != "help"]
    assert undocumented == [] and page.description
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert page.description.split(".")[0] in " ".join(capsys.readouterr().out.split())
