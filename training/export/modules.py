"""Torch modules that hold ModelScope RaNER / StructBERT weights, and the explicit key mapping.

StructBERT and BERT share one network (StructBERT differs in pre-training objectives), so both load
into ``transformers.BertModel``; ModelScope's ``Sbert*`` modules use the same parameter names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import nn
from transformers import BertConfig, BertModel

from training.export.errors import StateDictMismatchError
from training.export.layouts import SourceModel, Task


def bert_config(encoder_config: Mapping[str, object], *, num_labels: int) -> BertConfig:
    """A ``BertConfig`` from a ModelScope ``config.json``, with eager attention (exports cleanly)."""
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "hidden_act",
        "layer_norm_eps",
        "pad_token_id",
    )
    settings: dict[str, Any] = {key: encoder_config[key] for key in keys if key in encoder_config}
    # num_labels and attn_implementation are PreTrainedConfig keywords the dataclass-style stub does not list
    return BertConfig(  # type: ignore[call-arg]
        **settings,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )


class CrfParameters(nn.Module):
    """The three CRF tensors of ModelScope's ``CRF`` (``transitions[prev, next]``)."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))


class TokenClassifierWithCrf(nn.Module):
    """RaNER: encoder → linear emissions; the CRF is carried along but decoded outside the graph."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        assert config.num_labels is not None  # set by bert_config
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.linear = nn.Linear(config.hidden_size, config.num_labels)
        self.crf = CrfParameters(config.num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.linear(hidden)


class SequenceClassifier(nn.Module):
    """StructBERT sentiment: encoder → pooler ([CLS], dense, tanh) → classifier logits."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        assert config.num_labels is not None  # set by bert_config
        self.encoder = BertModel(config, add_pooling_layer=True)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        pooled = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).pooler_output
        return self.classifier(pooled)


@overload
def build_module(
    task: Literal["ner"], encoder_config: Mapping[str, object], num_labels: int
) -> TokenClassifierWithCrf: ...
@overload
def build_module(
    task: Literal["sentiment"], encoder_config: Mapping[str, object], num_labels: int
) -> SequenceClassifier: ...
def build_module(
    task: Task, encoder_config: Mapping[str, object], num_labels: int
) -> TokenClassifierWithCrf | SequenceClassifier:
    config = bert_config(encoder_config, num_labels=num_labels)
    module = TokenClassifierWithCrf(config) if task == "ner" else SequenceClassifier(config)
    return module.eval()


@dataclass(frozen=True)
class LoadReport:
    """What happened to each checkpoint key: loaded, or ignored because the network does not use it."""

    loaded: int
    ignored: list[str] = field(default_factory=list)


def map_checkpoint_key(task: Task, key: str) -> str | None:
    """The module parameter a ModelScope checkpoint key feeds; ``None`` for known-unused keys.

    Raises nothing: unknown keys map to themselves and are reported as unexpected by the caller.
    """
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta (ModelScope renames them too).
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.endswith("embeddings.position_ids"):
        return None  # a buffer (0..max_len-1), not a weight
    if task == "ner":
        if key.startswith("encoder.pooler."):
            return None  # the backbone's pooler is built but unused by token classification
        if key.startswith("head."):
            key = key[len("head.") :]
        return key  # encoder.*, linear.*, crf.* keep their names
    if key.startswith("bert."):
        return "encoder." + key[len("bert.") :]
    return key  # classifier.*


def load_checkpoint(module: nn.Module, task: Task, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Load a ModelScope state dict into ``module``; fail on any missing, unexpected or mis-shaped key."""
    expected = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    for key, tensor in state_dict.items():
        target = map_checkpoint_key(task, key)
        if target is None:
            ignored.append(key)
        elif target in mapped:
            raise StateDictMismatchError(f"checkpoint keys collide on {target!r} (both with and without 'head.'?)")
        elif target not in expected:
            unexpected.append(key)
        else:
            mapped[target] = tensor
    missing = sorted(set(expected) - set(mapped))
    if missing or unexpected:
        raise StateDictMismatchError(
            "the checkpoint does not fit the "
            f"{'RaNER transformer-crf' if task == 'ner' else 'StructBERT sequence-classification'} "
            f"architecture: missing {_preview(missing)}, unexpected {_preview(sorted(unexpected))}"
        )
    wrong_shape = [
        f"{key} {tuple(tensor.shape)} != {tuple(expected[key].shape)}"
        for key, tensor in mapped.items()
        if tuple(tensor.shape) != tuple(expected[key].shape)
    ]
    if wrong_shape:
        raise StateDictMismatchError(f"checkpoint shapes do not match config.json: {_preview(wrong_shape)}")
    module.load_state_dict({key: tensor.float() for key, tensor in mapped.items()}, strict=True)
    return LoadReport(loaded=len(mapped), ignored=sorted(ignored))


def load_source_module(source: SourceModel) -> tuple[TokenClassifierWithCrf | SequenceClassifier, LoadReport]:
    """Build the torch module for ``source`` and load its ``pytorch_model.bin``."""
    module = build_module(source.task, source.encoder_config, len(source.labels))
    try:
        state_dict = torch.load(source.weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or foreign file
        raise StateDictMismatchError(f"{source.weights} is not a readable torch state dict: {exc}") from None
    if not isinstance(state_dict, Mapping):
        raise StateDictMismatchError(f"{source.weights} holds a {type(state_dict).__name__}, not a state dict")
    report = load_checkpoint(module, source.task, state_dict)
    return module.eval(), report


def _preview(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}] ({len(items)})"


def torch_viterbi(emissions: torch.Tensor, mask: torch.Tensor, crf: CrfParameters) -> list[list[int]]:
    """Reference CRF decoding in torch: ModelScope's ``CRF._viterbi_decode`` recursion, batch-first.

    ``emissions`` [B, T, K], ``mask`` [B, T] (true for real positions, a prefix of each row).
    Returns each row's best path over its masked positions.
    """
    emissions = emissions.transpose(0, 1).double()  # [T, B, K]
    mask = mask.transpose(0, 1).bool()
    start = crf.start_transitions.detach().double()
    end = crf.end_transitions.detach().double()
    transitions = crf.transitions.detach().double()
    seq_length, batch_size = mask.shape
    score = start + emissions[0]
    history = []
    for i in range(1, seq_length):
        next_score = score.unsqueeze(2) + transitions + emissions[i].unsqueeze(1)
        next_score, indices = next_score.max(dim=1)
        score = torch.where(mask[i].unsqueeze(1), next_score, score)
        history.append(indices)
    score = score + end
    lengths = mask.long().sum(dim=0)
    paths = []
    for row in range(batch_size):
        best = int(score[row].argmax())
        path = [best]
        for step in range(int(lengths[row]) - 2, -1, -1):
            best = int(history[step][row, best])
            path.append(best)
        path.reverse()
        paths.append(path)
    return paths
