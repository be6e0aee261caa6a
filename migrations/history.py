"""Earlier revisions as modules, for a migration that changes what one of them wrote (a
database function's text) and puts it back on downgrade."""

import importlib.util
from pathlib import Path
from types import ModuleType

_VERSIONS = Path(__file__).with_name("versions")


def revision_module(filename: str) -> ModuleType:
    """The migration in `versions/filename`, loaded on its own (Alembic names them by date,
    which no import statement can spell)."""
    spec = importlib.util.spec_from_file_location(Path(filename).stem, _VERSIONS / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
