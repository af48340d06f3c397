"""Golden tests: the AllenNLP/bilm-tf ELMo fixture (shared/fixtures/allennlp_elmo) reproduced.

``FIXTURE_DIR`` is $ELMO_DIST_FIXTURES/allennlp_elmo when that is set, else the ``shared/``
folder beside the repository (where CI and the developers' machines have it).
"""
import os
from pathlib import Path


def _fixture_dir() -> Path:
    if os.environ.get("ELMO_DIST_FIXTURES"):
        return Path(os.environ["ELMO_DIST_FIXTURES"]) / "allennlp_elmo"
    repo = Path(__file__).resolve().parents[2]
    for root in (repo.parent / "shared", repo / "shared", Path("/work/shared")):
        if (root / "fixtures" / "allennlp_elmo" / "options.json").is_file():
            return root / "fixtures" / "allennlp_elmo"
    return repo.parent / "shared" / "fixtures" / "allennlp_elmo"


FIXTURE_DIR = _fixture_dir()
OPTIONS = FIXTURE_DIR / "options.json"
WEIGHTS = FIXTURE_DIR / "lm_weights.hdf5"
HAVE_FIXTURE = OPTIONS.is_file() and WEIGHTS.is_file()
