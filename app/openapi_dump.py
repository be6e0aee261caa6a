"""`make openapi`: write the schema the app serves to openapi/openapi.json."""

import json

from app.config import Settings
from app.main import create_app
from app.migrate import ROOT

OPENAPI_FILE = ROOT / "openapi" / "openapi.json"


def served_schema() -> str:
    # The schema does not depend on the database or secrets; placeholders are enough.
    settings = Settings(
        database_url="postgresql://schema-only/none",
        secret_key="s" * 32,
        gateway="sandbox",
        sandbox_url="http://schema-only",
    )
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OPENAPI_FILE.parent.mkdir(exist_ok=True)
    OPENAPI_FILE.write_text(served_schema())
    print(f"wrote {OPENAPI_FILE}")
