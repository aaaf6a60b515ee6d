"""The tiny model, tokenizer and data set an end-to-end run trains on, built locally (no download).

The task: "x+y=" -> the digit (x + y) mod 10. The reward (``reward.py``) gives 1 for that digit,
0.2 for another digit and 0 otherwise, so the groups of a random-init policy already have different
rewards and GRPO advantages are non-zero from the first step.

    python -m verl_cpu_harness.assets OUT_DIR    # writes OUT_DIR/model and OUT_DIR/data/{train,val}.parquet

Built with the running venv's own transformers, since a tokenizer saved by transformers 5 does not
load in transformers 4 (verl 0.7.1's venv).
"""

from __future__ import annotations

import sys
from pathlib import Path

DIGITS = [str(d) for d in range(10)]
SPECIAL = ["<pad>", "<eos>", "<bos>"]
# One character per token: transformers 5 loads any tokenizer saved beside a Qwen2 config as a
# byte-level Qwen2Tokenizer, which keeps single characters intact but not longer words.
# "Ċ" is the byte-level form of a newline, which verl 0.9's Qwen chat-token builder needs as one token.
SYMBOLS = ["U", "A", "+", "=", "Ċ"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ 'U' if message['role'] == 'user' else 'A' }}"
    "{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ 'A' }}{% endif %}"
)
DATA_SOURCE = "digit_sum"


def build_tokenizer():
    """A word-level fast tokenizer over the task's symbols, with a chat template verl's agent loop renders."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL + SYMBOLS + DIGITS)}
    core = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, seed: int = 0):
    """A random-init Qwen2 causal LM, two layers 32 wide."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def rows(pairs: list[tuple[int, int]], split: str) -> list[dict]:
    """verl's RL data format: chat prompt, data_source, ground truth."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": f"{x}+{y}="}],
            "ability": "arithmetic",
            "reward_model": {"style": "rule", "ground_truth": str((x + y) % 10)},
            "extra_info": {"index": index, "split": split},
        }
        for index, (x, y) in enumerate(pairs)
    ]


def build(out: Path) -> Path:
    """Write ``out/model`` (weights, config, tokenizer) and ``out/data/{train,val}.parquet``; return ``out``."""
    import pandas as pd

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    pairs = [(x, y) for x in range(10) for y in range(10)]
    (out / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows(pairs[::2], "train")).to_parquet(out / "data" / "train.parquet")
    pd.DataFrame(rows(pairs[1::10], "val")).to_parquet(out / "data" / "val.parquet")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
