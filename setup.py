"""The one build step pyproject.toml cannot say: ship ``database/`` inside the package.

The SQL is the product and stays where its authors keep it, ``database/`` at the repository
root, with no second copy in git. Building a wheel copies that folder to ``docstatus/_database/``
in the build tree; MANIFEST.in puts it in the sdist, so a wheel built from the sdist gets it
too. An editable install skips the copy: ``docstatus.database_files`` reads the checkout.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATABASE_SOURCE = Path(__file__).resolve().parent / "database"
DATABASE_IN_PACKAGE = Path("docstatus", "_database")  # docstatus.database_files.PACKAGED_NAME


class BuildPyWithDatabase(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source in sorted(path for path in DATABASE_SOURCE.rglob("*") if path.is_file()):
            target = Path(self.build_lib, DATABASE_IN_PACKAGE, source.relative_to(DATABASE_SOURCE))
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithDatabase})
