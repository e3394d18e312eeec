"""The package imports, the CLI answers --version and --help."""

import os
import subprocess
import sys

from typer.testing import CliRunner

import istd
from istd.cli import app


def test_version_flag() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert istd.__version__ in result.output


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_cli_does_not_import_albumentations() -> None:
    """Only training needs it: it costs about a second of start-up and checks online for a
    newer version when imported, which istd switches off when it does import it."""
    code = (
        "import sys, os, istd.cli\n"
        "assert 'albumentations' not in sys.modules\n"
        "from istd.data.transforms import train_transform\n"
        "train_transform(32)\n"
        "assert 'albumentations' in sys.modules\n"
        "assert os.environ['NO_ALBUMENTATIONS_UPDATE'] == '1'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
