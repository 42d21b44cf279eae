"""The form engine: field types, form -> table, the record service.

Importing this package registers its compile step and its install hook;
``setup(runtime)`` registers the record and comment services.
"""
from . import compiler, migrator  # noqa: F401  (registration side effects)


def setup(runtime) -> None:
    from .comments import Comments
    from .seed import Seeder
    from .service import Records
    runtime.services["records"] = Records(runtime)
    runtime.services["comments"] = Comments(runtime)
    runtime.services["seeder"] = Seeder(runtime)
