"""Where the local stack keeps its files: everything under `settings.home`, templates under `deploy/local`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from schemas.errors import PrerequisiteMissing
from schemas.settings import Settings

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"


@dataclass(frozen=True)
class Layout:
    """Absolute paths of one home: data, configs, logs and pid files of every component."""

    home: Path
    cache: Path

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        """The layout for `settings.home`, made absolute because servers run with other working dirs."""
        return cls(settings.home.expanduser().resolve(), settings.cache_dir.expanduser().resolve())

    def component_dir(self, name: str) -> Path:
        """`<home>/<name>`: config and data of one component."""
        return self.home / name

    def pid_path(self, name: str) -> Path:
        """`<home>/run/<name>.pid`."""
        return self.home / "run" / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        """`<home>/logs/<name>.log`: the process's stdout and stderr."""
        return self.home / "logs" / f"{name}.log"


def template_path(relative: str) -> Path:
    """A file under `deploy/`, or PrerequisiteMissing when this is not a source checkout."""
    path = DEPLOY_DIR / relative
    if not path.is_file():
        raise PrerequisiteMissing(f"{path} not found: `pupilflow stack` runs from a pupilflow source checkout")
    return path


def render(relative: str, **values: object) -> str:
    """Fill the `${name}` placeholders of a template under `deploy/`; a missing value is a KeyError."""
    return Template(template_path(relative).read_text()).substitute({k: str(v) for k, v in values.items()})


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it already holds exactly that (keeps mtimes of unchanged configs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
