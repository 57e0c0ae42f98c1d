"""``embedtrain push``: stage a checkpoint for the Hugging Face Hub and upload it with ``huggingface_hub``.

The staged folder is exactly what is uploaded: the model files of the checkpoint, a generated
``README.md`` (:mod:`embedtrain.hub.card`, extending sentence-transformers' card) and path-free, secret-free
copies of ``embedtrain_recipe.yaml`` / ``soup.json`` / ``embedtrain_run.json``. Staged files get ordinary
permissions (``rw-r--r--``) whatever the checkpoint's were (a model written through a temporary file can be
``rw-------``, which would upload fine but surprise whoever downloads the staged folder). Training leftovers (optimizer and scheduler states, RNG states, trainer state,
``checkpoint-*`` folders) and local evaluation folders (their summaries name local paths; the scores
are in the card's ``model-index``) are left out. ``--dry-run OUT`` writes that folder and uploads nothing.

The token comes from ``--token``, else ``HF_TOKEN``, else the cached ``huggingface-cli login``; it is
handed to ``HfApi`` only, never logged or written, and scrubbed from any error message.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from embedtrain.errors import CheckpointError, EmbedtrainError
from embedtrain.hub.card import RECIPE_FILE, RUN_FILE, build_card, public_recipe, public_soup, read_recipe
from embedtrain.hub.public import public_data
from embedtrain.io.checkpoints import MANIFEST, check_new_dir, is_trainer_state
from embedtrain.io.secrets import register_secret, scrub

logger = logging.getLogger(__name__)

#: Not uploaded: trainer state (``is_trainer_state``), the checkpoint's own README (a new card is written)
#: and folders that only make sense on the training machine.
EXCLUDED_FILES = {"README.md", MANIFEST}
EXCLUDED_DIRS = {"eval", "eval_results", "runs", "__pycache__"}
#: Mode of every staged file (and folder): readable by all, writable by the owner.
FILE_MODE, DIR_MODE = 0o644, 0o755


class PushError(EmbedtrainError):
    """The upload failed (message scrubbed of the token)."""


@dataclass
class PushResult:
    repo_id: str
    folder: Path
    files: list[str] = field(default_factory=list)
    uploaded: bool = False
    url: str | None = None


def _skip(rel: Path) -> bool:
    parts = rel.parts
    if any(p.startswith(".") for p in parts):
        return True
    if any(p in EXCLUDED_DIRS or p.startswith("checkpoint-") or p.endswith((".tmp", ".old")) for p in parts[:-1]):
        return True
    name = parts[-1]
    return name in EXCLUDED_FILES or is_trainer_state(name)


def stage_folder(checkpoint: str | Path, dest: str | Path, repo_id: str, *,
                 results_dirs: list[str | Path] = ()) -> list[str]:
    """Write what would be uploaded for ``checkpoint`` into ``dest``; return the relative file names."""
    from embedtrain.hub.results import find_results

    checkpoint = Path(checkpoint)
    if not (checkpoint / "modules.json").is_file():
        raise CheckpointError("not a sentence-transformers checkpoint (no modules.json)", file=checkpoint)
    dest = check_new_dir(dest, what="staging folder", protect=(checkpoint,))
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for src in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        rel = src.relative_to(checkpoint)
        if _skip(rel):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == Path(RECIPE_FILE):
            recipe = read_recipe(checkpoint)
            target.write_text(yaml.safe_dump(public_recipe(recipe or {}), sort_keys=False), encoding="utf-8")
        elif rel == Path("soup.json"):
            soup = json.loads(src.read_text(encoding="utf-8"))
            target.write_text(json.dumps(public_soup(soup), indent=2) + "\n", encoding="utf-8")
        elif rel == Path(RUN_FILE):
            record = json.loads(src.read_text(encoding="utf-8"))
            target.write_text(json.dumps(public_data(record), indent=1) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(src, target)  # contents only: modes are set below
        os.chmod(target, FILE_MODE)
        files.append(rel.as_posix())
    rows = find_results(checkpoint, list(results_dirs))
    (dest / "README.md").write_text(build_card(checkpoint, repo_id, results=rows), encoding="utf-8")
    os.chmod(dest / "README.md", FILE_MODE)
    for folder in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        os.chmod(folder, DIR_MODE)
    files.append("README.md")
    return sorted(files)


def resolve_token(token: str | None) -> str | None:
    """``--token``, else ``HF_TOKEN``; None lets huggingface_hub use the cached login."""
    return token or os.environ.get("HF_TOKEN") or None




def push(checkpoint: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         dry_run: str | Path | None = None, commit_message: str | None = None,
         results_dirs: list[str | Path] = (), api=None) -> PushResult:
    """Upload ``checkpoint`` to ``repo_id`` (or, with ``dry_run``, only write the staged folder there)."""
    if dry_run is not None:
        files = stage_folder(checkpoint, dry_run, repo_id, results_dirs=results_dirs)
        logger.info("dry run: wrote the %d files that would be uploaded to %s into %s", len(files), repo_id, dry_run)
        return PushResult(repo_id, Path(dry_run), files, uploaded=False)
    token = resolve_token(token)
    if token:
        register_secret(token)
    with tempfile.TemporaryDirectory(prefix="embedtrain-push-") as tmp:
        staged = Path(tmp) / "upload"
        files = stage_folder(checkpoint, staged, repo_id, results_dirs=results_dirs)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        logger.info("uploading %d files to %s", len(files), repo_id)
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="model",
                                     commit_message=commit_message or "Upload model trained with embedtrain")
        except Exception as exc:  # network/auth errors: report without a traceback, never with the token
            raise PushError(scrub(f"upload to {repo_id} failed: {type(exc).__name__}: {exc}")) from None
    url = getattr(info, "commit_url", None) or (str(info) if info is not None else None)
    logger.info("uploaded to %s", repo_id)
    return PushResult(repo_id, Path(checkpoint), files, uploaded=True, url=scrub(url) if url else None)
