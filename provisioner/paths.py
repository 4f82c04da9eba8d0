"""Where the project's own files live: the package's data, and the templates and playbooks
beside the package (the toolkit runs from its checkout, installed editable)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
TEMPLATES_DIR = PACKAGE_DIR.parent / "templates"
PLAYBOOK_DIR = PACKAGE_DIR.parent / "playbooks"
